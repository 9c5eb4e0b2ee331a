//! Where benchmark files live.
//!
//! Durable-write figures mean nothing on tmpfs (its `fdatasync` is a
//! no-op), so files go under the workspace's `target/` directory, on the
//! same file system as the repository, unless `FARMLOG_BENCH_DIR` says
//! otherwise. Each benchmark gets its own temporary directory, removed
//! when dropped, so an interrupted run leaves at most one stale directory
//! under the root.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::BenchResult;

/// Overrides the root directory of benchmark files.
pub const ROOT_ENV: &str = "FARMLOG_BENCH_DIR";

/// `statfs` magic number of tmpfs (linux/magic.h).
const TMPFS_MAGIC: u64 = 0x0102_1994;
/// `statfs` magic number of ramfs (linux/magic.h).
const RAMFS_MAGIC: u64 = 0x8584_58f6;

/// The root of benchmark files: `$FARMLOG_BENCH_DIR`, or
/// `<workspace>/target/farmlog-bench`.
pub fn root() -> PathBuf {
    match std::env::var_os(ROOT_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/farmlog-bench"),
    }
}

/// A fresh, empty directory under `root`, removed when dropped. Refuses a
/// memory-backed file system, where `fdatasync` measures nothing.
pub fn dir_in(root: &Path, label: &str) -> BenchResult<TempDir> {
    std::fs::create_dir_all(root).map_err(|error| format!("creating {}: {error}", root.display()))?;
    check_on_disk(root)?;
    let dir = tempfile::Builder::new()
        .prefix(&format!("{label}-"))
        .tempdir_in(root)
        .map_err(|error| format!("creating a directory under {}: {error}", root.display()))?;
    Ok(dir)
}

/// [`dir_in`] under [`root`].
pub fn dir(label: &str) -> BenchResult<TempDir> {
    dir_in(&root(), label)
}

/// Bytes free for an unprivileged writer on `path`'s file system.
pub fn available_bytes(path: &Path) -> BenchResult<u64> {
    let stat = rustix::fs::statvfs(path).map_err(|error| format!("statvfs {}: {error}", path.display()))?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Fails unless at least `needed` bytes are free on `path`'s file system.
pub fn require_space(path: &Path, needed: u64, what: &str) -> BenchResult<()> {
    let available = available_bytes(path)?;
    if available < needed {
        return Err(format!(
            "{what} needs {} MiB free under {}, only {} MiB are; lower the size or free space",
            needed >> 20,
            path.display(),
            available >> 20
        )
        .into());
    }
    Ok(())
}

fn check_on_disk(path: &Path) -> BenchResult<()> {
    let stat = rustix::fs::statfs(path).map_err(|error| format!("statfs {}: {error}", path.display()))?;
    // The field's integer type differs between architectures.
    #[allow(clippy::unnecessary_cast)]
    let magic = stat.f_type as u64;
    if magic == TMPFS_MAGIC || magic == RAMFS_MAGIC {
        return Err(format!(
            "{} is on a memory-backed file system, where fdatasync is a no-op; set {ROOT_ENV} to a directory on a real disk",
            path.display()
        )
        .into());
    }
    Ok(())
}
