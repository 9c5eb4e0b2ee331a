//! The background scrub finds a damaged record in a sealed segment (which
//! recovery at open does not read), reports it, and leaves the marker that
//! keeps the node from starting again from that directory.

use std::path::Path;
use std::sync::Arc;

use farmlog_engine::io::{SimConfig, SimStorage, Storage};
use farmlog_engine::log::segment::segment_name;
use farmlog_engine::{kinds, FlushMode, Log, LogOptions, NewRecord};
use farmlog_replica::scrub::{self, ScrubStatus};
use tokio::sync::watch;

#[test]
fn the_scrub_finds_a_flipped_bit_in_a_sealed_segment() {
    let machine = SimStorage::new(SimConfig { seed: 3 });
    let storage: Arc<dyn Storage> = Arc::new(machine.clone());
    let dir = Path::new("/node");
    let options = LogOptions {
        first_index: 0,
        segment_bytes: 64 << 10,
        disk_reserve_bytes: 0,
        flush: FlushMode::Manual,
        ..LogOptions::default()
    };
    let log = Arc::new(Log::open_with(storage.clone(), &dir.join("log"), options).unwrap());
    let payload = vec![7u8; 1000];
    for _ in 0..200 {
        let record = NewRecord {
            term: 1,
            group: 0,
            kind: kinds::RAW,
            payload: &payload,
        };
        log.append(&[record]).unwrap();
    }
    let segments = log.segments();
    assert!(
        segments.len() > 2 && segments[0].sealed,
        "the workload spans sealed segments"
    );
    let victim = log.read(10).unwrap();
    let (sequence, offset) = victim.location();
    machine
        .flip_bit(&dir.join("log").join(segment_name(sequence)), offset + 100, 3)
        .unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let (status, watched) = watch::channel(ScrubStatus::default());
    let damage = runtime.block_on(scrub::scrub(log.clone(), 1 << 20, status));
    assert!(damage.starts_with("record 10:"), "{damage}");
    assert_eq!(watched.borrow().damage.as_deref(), Some(damage.as_str()));
    assert_eq!(watched.borrow().records, 0, "the damage is in the first chunk");

    assert_eq!(scrub::damage_marked(storage.as_ref(), dir), None);
    scrub::mark_damaged(storage.as_ref(), dir, &damage).unwrap();
    machine.crash();
    assert_eq!(
        scrub::damage_marked(storage.as_ref(), dir).as_deref(),
        Some(damage.as_str())
    );
    scrub::wipe(storage.as_ref(), dir).unwrap();
    assert_eq!(scrub::damage_marked(storage.as_ref(), dir), None);
    assert!(storage.list(&dir.join("log")).unwrap().is_empty());
}

#[test]
fn a_clean_log_is_scrubbed_at_the_bounded_rate() {
    let storage: Arc<dyn Storage> = Arc::new(SimStorage::new(SimConfig { seed: 4 }));
    let options = LogOptions {
        first_index: 0,
        segment_bytes: 64 << 10,
        disk_reserve_bytes: 0,
        flush: FlushMode::Manual,
        ..LogOptions::default()
    };
    let log = Arc::new(Log::open_with(storage, Path::new("/clean"), options).unwrap());
    let payload = vec![1u8; 4064];
    for _ in 0..256 {
        let record = NewRecord {
            term: 1,
            group: 0,
            kind: kinds::RAW,
            payload: &payload,
        };
        log.append(&[record]).unwrap();
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let (status, watched) = watch::channel(ScrubStatus::default());
    runtime.block_on(async {
        let started = tokio::time::Instant::now();
        let task = tokio::spawn(scrub::scrub(log.clone(), 1 << 20, status));
        let mut watched = watched.clone();
        watched.wait_for(|status| status.passes == 1).await.unwrap();
        // 256 records of 4 KiB at 1 MiB/s: about one simulated second.
        let took = started.elapsed();
        assert!(took >= std::time::Duration::from_millis(950), "{took:?}");
        assert_eq!(watched.borrow().records, 256);
        assert_eq!(watched.borrow().damage, None);
        task.abort();
    });
}
