//! The deterministic cluster simulation: many seeds, each run twice.
//!
//! `FARMLOG_SIM_SEEDS` sets how many seeds (default 200, from
//! `FARMLOG_SIM_FIRST_SEED`, default 0); `FARMLOG_SIM_SEED=<n>` replays
//! one seed and prints its report. Thousands:
//!
//! ```text
//! FARMLOG_SIM_SEEDS=5000 cargo test --release -p farmlog-replica --test sim
//! ```

use farmlog_replica::sim::{run, SimOptions};

fn env(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .map(|value| value.parse().unwrap_or_else(|_| panic!("{name} must be a number")))
}

fn options_for(seed: u64) -> SimOptions {
    SimOptions {
        // Mostly three voters; every fifth seed five.
        nodes: if seed % 5 == 4 { 5 } else { 3 },
        ..SimOptions::default()
    }
}

#[test]
fn seeds_keep_every_guarantee_and_repeat_exactly() {
    let (first, count) = match env("FARMLOG_SIM_SEED") {
        Some(seed) => {
            // A replay may show the nodes' own logs: RUST_LOG=openraft=debug.
            if std::env::var_os("RUST_LOG").is_some() {
                let _ = tracing_subscriber::fmt()
                    .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                    .with_writer(std::io::stderr)
                    .try_init();
            }
            (seed, 1)
        }
        None => (
            env("FARMLOG_SIM_FIRST_SEED").unwrap_or(0),
            env("FARMLOG_SIM_SEEDS").unwrap_or(200),
        ),
    };
    let mut totals = (0u64, 0u64, 0u64, 0u64);
    let mut changes = (0u64, 0u64, 0u64, 0u64);
    let mut damage = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut snapshots = (0u64, 0u64);
    let mut schema = (0u64, 0u64);
    for seed in first..first + count {
        let options = options_for(seed);
        let replay = format!("replay with: FARMLOG_SIM_SEED={seed} cargo test --release -p farmlog-replica --test sim");
        let report = run(seed, &options).unwrap_or_else(|violation| panic!("{violation}\n{replay}"));
        let again = run(seed, &options).unwrap_or_else(|violation| panic!("second run: {violation}\n{replay}"));
        assert_eq!(report, again, "seed {seed} did not repeat exactly\n{replay}");
        if count == 1 {
            println!("{report:#?}");
        }
        totals.0 += report.acked;
        totals.1 += report.crashes;
        totals.2 += report.partitions;
        totals.3 += report.simulated_ms;
        changes.0 += report.membership_changes;
        changes.1 += report.membership_changes_done;
        changes.2 += report.hand_offs;
        changes.3 += report.hand_offs_done;
        damage.0 += report.damages;
        damage.1 += report.rejoins;
        damage.2 += report.tail_damages;
        damage.3 += report.fenced_starts;
        damage.4 += report.truncations;
        snapshots.0 += report.with_snapshot;
        snapshots.1 += report.backfilled;
        schema.0 += report.schema_upgrades;
        schema.1 += report.schema_upgrades_done;
    }
    println!(
        "{count} seeds from {first}: {} writes acknowledged, {} crashes, {} partitions, {} s simulated, \
         {} of {} membership changes, {} of {} hand-offs and {} of {} schema moves completed, {} logs damaged ({} in the newest round, {} files cut short), {} rejoins, {} fenced starts; at the end {} nodes held a snapshot, {} were brought up by one and fetched the history behind it",
        totals.0,
        totals.1,
        totals.2,
        totals.3 / 1000,
        changes.1,
        changes.0,
        changes.3,
        changes.2,
        schema.1,
        schema.0,
        damage.0,
        damage.2,
        damage.4,
        damage.1,
        damage.3,
        snapshots.0,
        snapshots.1
    );
    if count >= 100 {
        // The schedules must actually exercise what they claim to.
        assert!(changes.1 > 0, "no membership change completed in {count} seeds");
        assert!(changes.3 > 0, "no hand-off completed in {count} seeds");
        assert!(damage.1 > 0, "no damaged node rejoined in {count} seeds");
        assert!(damage.2 > 0, "no damage to a newest round in {count} seeds");
        assert!(damage.3 > 0, "no node started fenced in {count} seeds");
        assert!(damage.4 > 0, "no log file was cut short in {count} seeds");
        assert!(snapshots.1 > 0, "no node was brought up by a snapshot in {count} seeds");
        assert!(schema.1 > 0, "no schema move completed in {count} seeds");
    }
}
