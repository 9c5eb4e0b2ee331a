//! How much one read of the log store returns. Replication reads
//! (`limited_get_log_entries`) stop after `READ_BYTES_MAX` bytes; every
//! other read returns the whole range, because openraft 0.9 applies
//! committed entries with `get_log_entries`, which stops Raft (a
//! defensive storage error) on a shorter answer. That happened to a
//! 3-node cluster restarted with more than `READ_BYTES_MAX` of entries
//! to re-apply above its snapshot: every node's Raft quit.

use std::sync::Arc;

use farmlog_engine::io::OsStorage;
use farmlog_engine::LogOptions;
use farmlog_replica::entry::log_id;
use farmlog_replica::log_store::READ_BYTES_MAX;
use farmlog_replica::{open_stores, Entry, Proposal, StoreOptions};
use openraft::storage::{RaftLogReaderExt, RaftLogStorageExt};
use openraft::{EntryPayload, RaftLogReader};

/// Bytes of each entry's payload: enough entries of it exceed one read.
const ENTRY_BYTES: usize = 1 << 20;

#[test]
fn only_replication_reads_are_cut_at_the_byte_bound() {
    let entries = (READ_BYTES_MAX as usize / ENTRY_BYTES) as u64 + 4;
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let options = StoreOptions {
            log: LogOptions {
                first_index: 0,
                disk_reserve_bytes: 0,
                ..LogOptions::default()
            },
            ..StoreOptions::default()
        };
        let mut store = open_stores(Arc::new(OsStorage), dir.path(), options).unwrap().0;
        let appended: Vec<Entry> = (0..entries)
            .map(|index| Entry {
                log_id: log_id(1, index),
                payload: EntryPayload::Normal(Proposal::from(vec![index as u8; ENTRY_BYTES])),
            })
            .collect();
        store.blocking_append(appended).await.unwrap();

        // What openraft applies with: the whole range, or an error.
        let all = store.get_log_entries(0..entries).await.unwrap();
        assert_eq!(all.len() as u64, entries);
        assert_eq!(
            store.try_get_log_entries(0..entries).await.unwrap().len() as u64,
            entries
        );

        // What replication sends at once: a prefix, cut after the bound.
        let limited = store.limited_get_log_entries(0, entries).await.unwrap();
        assert!(!limited.is_empty());
        assert!(
            (limited.len() as u64) < entries,
            "{} entries in one read",
            limited.len()
        );
        let first_past = (READ_BYTES_MAX as usize).div_ceil(ENTRY_BYTES + 64) as u64;
        assert!(limited.len() as u64 >= first_past.min(entries));
        for (expected, entry) in (0..).zip(&limited) {
            assert_eq!(entry.log_id.index, expected);
        }
    });
}
