//! Finding a damaged log before it matters.
//!
//! A record that was acknowledged durable and is later damaged (a bad
//! sector, a bit flip) or lost makes this node's log go backwards, which
//! openraft treats as undefined behaviour: such a node must not vote or
//! lead with that log. Damage is found two ways:
//!
//! - **At open**: the engine's recovery refuses a log whose acknowledged
//!   tail is damaged; with `StoreOptions::verify_at_open` the whole log is
//!   checked too (`Log::verify`).
//! - **While running**: the [`scrub`] task reads every record below the
//!   durable end, crc and all, at a bounded rate, pass after pass, and
//!   publishes what it found ([`ScrubStatus`]).
//!
//! On damage the node writes a durable `DAMAGED` marker and stops Raft;
//! it will not start again from that directory (`Error::Damaged`). It
//! recovers by rejoining as a new member (`Node::rejoin`, see `node.rs`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use farmlog_engine::io::{OpenMode, Storage};
use farmlog_engine::Log;
use tokio::sync::watch;

/// Default scrub rate: bytes read per second.
pub const SCRUB_BYTES_PER_SECOND_DEFAULT: u64 = 32 << 20;
/// Records read between two pauses.
pub const SCRUB_CHUNK_RECORDS: u64 = 256;
/// Pause between two passes over the log.
pub const SCRUB_PASS_PAUSE: Duration = Duration::from_secs(10);
/// The marker a node leaves when its log is damaged.
pub const DAMAGED_NAME: &str = "DAMAGED";

/// What the scrub has done and found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScrubStatus {
    /// Complete passes over the log.
    pub passes: u64,
    /// Records and bytes checked, over all passes.
    pub records: u64,
    pub bytes: u64,
    /// The first damage found (index and what is wrong); the scrub stops.
    pub damage: Option<String>,
}

/// Scrubs `log` at `bytes_per_second` until damage is found (returned) or
/// the task is dropped.
pub async fn scrub(log: Arc<Log>, bytes_per_second: u64, status: watch::Sender<ScrubStatus>) -> String {
    let bytes_per_second = bytes_per_second.max(1);
    loop {
        let mut index = log.first_index();
        loop {
            let end = log.durable_end().min(index + SCRUB_CHUNK_RECORDS);
            if index >= end {
                break;
            }
            let mut chunk_bytes = 0u64;
            for at in index..end {
                match log.read(at) {
                    Ok(record) => chunk_bytes += record.framed_len(),
                    // Purged or truncated meanwhile: not damage.
                    Err(_) if at < log.first_index() || at >= log.next_index() => {}
                    Err(error) => {
                        let damage = format!("record {at}: {error}");
                        status.send_modify(|status| status.damage = Some(damage.clone()));
                        return damage;
                    }
                }
            }
            status.send_modify(|status| {
                status.records += end - index;
                status.bytes += chunk_bytes;
            });
            index = end;
            let pause = Duration::from_micros(chunk_bytes.saturating_mul(1_000_000) / bytes_per_second);
            tokio::time::sleep(pause).await;
        }
        status.send_modify(|status| status.passes += 1);
        tokio::time::sleep(SCRUB_PASS_PAUSE).await;
    }
}

/// Leaves the `DAMAGED` marker in `dir` with `what`.
///
/// On disk when it returns `Ok`: the marker, durable.
pub fn mark_damaged(storage: &dyn Storage, dir: &Path, what: &str) -> std::io::Result<()> {
    let path = dir.join(DAMAGED_NAME);
    let _ = storage.remove(&path);
    let file = storage.open(&path, OpenMode::CreateNew)?;
    file.write_all_at(what.as_bytes(), 0)?;
    file.sync_data()?;
    storage.sync_dir(dir)
}

/// The damage recorded in `dir`'s marker, if any.
pub fn damage_marked(storage: &dyn Storage, dir: &Path) -> Option<String> {
    let file = storage.open(&dir.join(DAMAGED_NAME), OpenMode::Read).ok()?;
    let len = file.len().ok()?.min(4096) as usize;
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, 0).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// The file in a rejoined node's directory naming the damaged node it
/// replaced.
pub const REPLACES_NAME: &str = "REPLACES";

/// Records in `dir` that the node there replaced damaged node `old`.
///
/// On disk when it returns `Ok`: `REPLACES`, durable.
pub fn mark_replaces(storage: &dyn Storage, dir: &Path, old: u64) -> std::io::Result<()> {
    let mut bytes = [0u8; 16];
    bytes[0..8].copy_from_slice(&old.to_le_bytes());
    let crc = crc32fast::hash(&bytes[0..8]);
    bytes[8..12].copy_from_slice(&crc.to_le_bytes());
    crate::meta::replace_file(storage, dir, REPLACES_NAME, &bytes)
}

/// The damaged node the node in `dir` replaced, if any. A damaged record
/// reads as none: the node then answers only for itself.
pub fn replaces(storage: &dyn Storage, dir: &Path) -> Option<u64> {
    let file = storage.open(&dir.join(REPLACES_NAME), OpenMode::Read).ok()?;
    let mut bytes = [0u8; 16];
    file.read_exact_at(&mut bytes, 0).ok()?;
    let old = u64::from_le_bytes(bytes[0..8].try_into().expect("eight bytes"));
    let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("four bytes"));
    (crc == crc32fast::hash(&bytes[0..8])).then_some(old)
}

/// Removes every file under `dir` (a node's data), depth first.
///
/// On disk when it returns `Ok`: the removals, durable.
pub fn wipe(storage: &dyn Storage, dir: &Path) -> std::io::Result<()> {
    let names = match storage.list(dir) {
        Ok(names) => names,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    for name in names {
        let path = dir.join(&name);
        // A directory lists; a file does not.
        match storage.list(&path) {
            Ok(_) => wipe(storage, &path)?,
            Err(_) => storage.remove(&path)?,
        }
    }
    storage.sync_dir(dir)
}
