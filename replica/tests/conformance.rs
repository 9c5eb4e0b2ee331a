//! openraft's own storage conformance suite (`openraft::testing::Suite`),
//! case by case, against the engine-backed log store and state machine on
//! a real directory.
//!
//! Each case runs as its own test, every case of `Suite::test_all`.

#![allow(clippy::result_large_err)] // openraft's StorageError is what the suite returns

use std::sync::Arc;

use farmlog_engine::io::OsStorage;
use farmlog_engine::LogOptions;
use farmlog_replica::{open_stores, LogStore, NodeId, StateMachine, StoreOptions, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = TempDir::new().expect("a temporary directory");
        let options = StoreOptions {
            log: LogOptions {
                first_index: 0,
                segment_bytes: 1 << 20,
                disk_reserve_bytes: 0,
                ..LogOptions::default()
            },
            ..StoreOptions::default()
        };
        let (log_store, state_machine) =
            open_stores(Arc::new(OsStorage), dir.path(), options).expect("stores open on a fresh directory");
        Ok((dir, log_store, state_machine))
    }
}

/// Runs a case on a fresh multi-thread runtime, as the suite does.
fn run_fut<F: std::future::Future<Output = Result<(), StorageError<NodeId>>>>(
    future: F,
) -> Result<(), StorageError<NodeId>> {
    tokio::runtime::Runtime::new().expect("a runtime").block_on(future)
}

type Cases = Suite<TypeConfig, LogStore, StateMachine, Builder, TempDir>;

fn run_case<F, Fu>(case: F) -> Result<(), StorageError<NodeId>>
where
    F: FnOnce(LogStore, StateMachine) -> Fu,
    Fu: std::future::Future<Output = Result<(), StorageError<NodeId>>>,
{
    run_fut(async move {
        let (_dir, store, state_machine) = Builder.build().await?;
        case(store, state_machine).await
    })
}

macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                run_case(Cases::$case).expect(concat!("suite case ", stringify!($case)));
            }
        )*
    };
}

cases!(
    last_membership_in_log_initial,
    last_membership_in_log,
    last_membership_in_log_multi_step,
    get_membership_initial,
    get_membership_from_log_and_empty_sm,
    get_membership_from_empty_log_and_sm,
    get_membership_from_log_le_sm_last_applied,
    get_membership_from_log_gt_sm_last_applied_1,
    get_membership_from_log_gt_sm_last_applied_2,
    get_initial_state_without_init,
    get_initial_state_membership_from_log_and_sm,
    get_initial_state_with_state,
    get_initial_state_last_log_gt_sm,
    get_initial_state_last_log_lt_sm,
    get_initial_state_log_ids,
    get_initial_state_re_apply_committed,
    save_vote,
    get_log_entries,
    limited_get_log_entries,
    try_get_log_entry,
    initial_logs,
    get_log_state,
    get_log_id,
    last_id_in_log,
    last_applied_state,
    purge_logs_upto_0,
    purge_logs_upto_5,
    purge_logs_upto_20,
    delete_logs_since_11,
    delete_logs_since_0,
    append_to_log,
    snapshot_meta,
    apply_single,
    apply_multiple,
);

#[test]
fn transfer_snapshot() {
    run_fut(Cases::transfer_snapshot(&Builder)).expect("suite case transfer_snapshot");
}
