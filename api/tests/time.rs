//! Time advances without clients: the leader proposes Ticks at a bounded
//! rate, so log time follows the clock when nobody writes.

mod common;

use common::Single;
use farmlog_api::context::now_ms;
use farmlog_api::ticker::TICK_INTERVAL;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_ticks_when_nobody_writes() {
    let single = Single::start().await;
    let index = || single.node.raft.metrics().borrow().last_log_index.unwrap_or(0);
    let log_time = || single.node.read_local(|applier| applier.state.log_time_ms());
    let before = index();
    let waited = TICK_INTERVAL * 4;
    tokio::time::sleep(waited).await;
    // Log time caught up with the clock, to within two intervals.
    let lag = now_ms().saturating_sub(log_time());
    assert!(
        lag <= 2 * TICK_INTERVAL.as_millis() as u64,
        "log time lags the clock by {lag} ms"
    );
    // At most one Tick per interval (plus one in flight).
    let ticks = index() - before;
    assert!((1..=5).contains(&ticks), "{ticks} entries in {waited:?}");
    single.stop().await;
}
