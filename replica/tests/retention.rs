//! History outlives openraft's purge: a purge moves the purge point (and
//! hides the entries from openraft), the engine keeps the records until
//! the retention policy allows dropping them, and never drops past the
//! purge point. A log that does not reach the purge point continues after
//! it.

use std::path::Path;
use std::sync::Arc;

use farmlog_engine::io::OsStorage;
use farmlog_engine::LogOptions;
use farmlog_replica::entry::log_id;
use farmlog_replica::{open_stores, Entry, LogStore, Proposal, Retention, StoreOptions};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{EntryPayload, RaftLogReader};

fn stores(dir: &Path, retention: Retention) -> LogStore {
    let options = StoreOptions {
        log: LogOptions {
            first_index: 0,
            segment_bytes: 64 << 10,
            disk_reserve_bytes: 0,
            ..LogOptions::default()
        },
        retention,
        ..StoreOptions::default()
    };
    open_stores(Arc::new(OsStorage), dir, options).unwrap().0
}

fn entries(range: std::ops::Range<u64>) -> Vec<Entry> {
    range
        .map(|index| Entry {
            log_id: log_id(1, index),
            // 2 KiB each: a 64 KiB segment holds about 30.
            payload: EntryPayload::Normal(Proposal::from(vec![index as u8; 2048])),
        })
        .collect()
}

fn run<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

#[test]
fn a_purge_keeps_the_history_by_default() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let mut store = stores(dir.path(), Retention::Forever);
        store.blocking_append(entries(0..100)).await.unwrap();
        store.purge(log_id(1, 60)).await.unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 60)));
        assert_eq!(state.last_log_id, Some(log_id(1, 99)));
        let visible = store.try_get_log_entries(0..100).await.unwrap();
        assert_eq!(visible.first().map(|entry| entry.log_id.index), Some(61));
        assert_eq!(store.log().first_index(), 0, "the history stays");
        assert_eq!(store.log().read(5).unwrap().payload()[0], 5);
    });
    // And after a restart.
    run(async {
        let mut store = stores(dir.path(), Retention::Forever);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 60)));
        assert_eq!(store.log().first_index(), 0);
    });
}

#[test]
fn the_retention_policy_drops_whole_segments_never_past_the_purge_point() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let mut store = stores(dir.path(), Retention::Records(20));
        store.blocking_append(entries(0..200)).await.unwrap();
        store.purge(log_id(1, 60)).await.unwrap();
        // The policy would keep only the last 20 (from 180), but openraft
        // purged only up to 60: nothing at or after 61 goes.
        let first = store.log().first_index();
        assert!(first > 0 && first <= 61, "first index {first}");
        store.purge(log_id(1, 190)).await.unwrap();
        let first = store.log().first_index();
        assert!(first > 61 && first <= 180, "first index {first}");
        assert!(store.log().read(180).is_ok());
    });
}

#[test]
fn a_log_behind_the_purge_point_continues_after_it() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let mut store = stores(dir.path(), Retention::Forever);
        store.blocking_append(entries(0..10)).await.unwrap();
        // A snapshot up to 50 was installed: the log jumps to 51.
        store.purge(log_id(1, 50)).await.unwrap();
        assert_eq!(store.log().next_index(), 51);
        store.blocking_append(entries(51..60)).await.unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(1, 59)));
        assert_eq!(store.try_get_log_entries(0..100).await.unwrap().len(), 9);
    });
}

/// Entries of one command batch each, whose command was proposed at
/// `index` seconds of log time.
fn dated_entries(range: std::ops::Range<u64>) -> Vec<Entry> {
    use farmlog_engine::state::batch::{self, BatchBuilder};
    range
        .map(|index| {
            let mut command = farmlog_engine::state::testing::farm().remove(0);
            command.proposed_at_ms = index * 1000;
            let mut builder = BatchBuilder::new();
            builder.push(batch::encode(&command).unwrap()).unwrap();
            Entry {
                log_id: log_id(1, index),
                payload: EntryPayload::Normal(Proposal::Commands(builder.finish().into())),
            }
        })
        .collect()
}

#[test]
fn the_age_policy_keeps_what_is_recent_in_log_time() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let mut store = stores(dir.path(), Retention::AgeMs(100_000));
        store.blocking_append(dated_entries(0..1000)).await.unwrap();
        assert!(store.log().segments().len() >= 3, "the test needs several segments");
        store.purge(log_id(1, 990)).await.unwrap();
        // Log time ends at 999 s: what is within 100 s (from 899) stays;
        // whole segments wholly older than that go.
        let first = store.log().first_index();
        assert!(first > 0 && first <= 899, "first index {first}");
        // And every droppable segment went: the oldest kept one holds a
        // recent record.
        let oldest_kept = store.log().segments()[0].clone();
        assert!(oldest_kept.first_index + oldest_kept.records > 899);
    });
}
