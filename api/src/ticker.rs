//! Time without clients: the leader proposes a Tick whenever log time
//! lags its clock by [`TICK_INTERVAL`], so that expiries, visibility
//! timeouts, transfer retries and liveness advance with no client writing.
//! At most one Tick per interval; none while client writes keep log time
//! current.

use std::time::Duration;

use openraft::ServerState;

use crate::context::{now_ms, Context};

/// How often the leader checks log time, and how far it may lag.
pub const TICK_INTERVAL: Duration = Duration::from_secs(1);

/// Runs until the task is dropped.
pub async fn run(context: Context) {
    let mut interval = tokio::time::interval(TICK_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        let node = context.node();
        if node.raft.metrics().borrow().state != ServerState::Leader {
            continue;
        }
        let log_time_ms = node.read_local(|applier| applier.state.log_time_ms());
        if now_ms().saturating_sub(log_time_ms) < TICK_INTERVAL.as_millis() as u64 {
            continue;
        }
        if let Err(status) = context.tick().await {
            tracing::debug!(%status, "a tick was not proposed");
        }
    }
}
