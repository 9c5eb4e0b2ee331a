//! File I/O behind one small trait, so that tests can inject faults.
//!
//! Every byte the engine reads or writes goes through [`Storage`] and
//! [`StorageFile`]. There are two implementations:
//!
//! - [`OsStorage`]: the real file system. Positioned writes (`pwrite`),
//!   `fdatasync`, read-only memory maps (memmap2), `flock` for the directory
//!   lock, `statvfs` for free space.
//! - [`SimStorage`]: an in-memory file system with a written-down fault
//!   model (power loss that keeps, drops or tears each unsynced page, torn
//!   writes, bit flips, failed syncs, a full disk). See `sim.rs`.
//!
//! Architecture invariant: nothing in the engine touches `std::fs` directly
//! except `OsStorage`.

mod os;
mod sim;

use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::sync::Arc;

pub use os::OsStorage;
pub use sim::{SimConfig, SimStorage};

/// How a file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write; the file must not exist yet. The new directory
    /// entry is durable only after [`Storage::sync_dir`].
    CreateNew,
}

/// A file system, real or simulated.
pub trait Storage: Send + Sync + Debug + 'static {
    /// Opens (or creates, see [`OpenMode`]) one file.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>>;

    /// The names of the entries of `dir` (file names only, not paths),
    /// sorted. Errors if `dir` does not exist.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;

    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// Removes one file. Durable only after [`Storage::sync_dir`].
    fn remove(&self, path: &Path) -> io::Result<()>;

    /// Atomically renames `from` to `to`, replacing `to`. Durable only after
    /// [`Storage::sync_dir`].
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Makes the directory's entries (creations, removals, renames) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Bytes available to an unprivileged writer on the file system that
    /// holds `dir`.
    fn available_bytes(&self, dir: &Path) -> io::Result<u64>;

    /// Takes an exclusive, advisory lock on the file `path` (created if
    /// missing) for as long as the returned guard lives. Fails at once with
    /// `io::ErrorKind::WouldBlock` if another holder has it.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>>;
}

/// One open file.
#[allow(clippy::len_without_is_empty)] // a file's emptiness is never asked
pub trait StorageFile: Send + Sync + Debug {
    /// Reads exactly `buf.len()` bytes at `offset`; `UnexpectedEof` if the
    /// file is shorter.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Writes all of `buf` at `offset`, extending the file if needed. The
    /// bytes are visible to reads and maps at once, durable only after
    /// [`StorageFile::sync_data`].
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// `fdatasync`: every write before this call, and the file's length,
    /// are durable when it returns `Ok`. After an `Err` nothing is known.
    fn sync_data(&self) -> io::Result<()>;

    /// The file's current length in bytes.
    fn len(&self) -> io::Result<u64>;

    /// A read-only view of the file's first `len` bytes (`len` must not
    /// exceed the file's length). Later writes inside that range are
    /// visible through the view, as with a shared memory map. The file must
    /// not shrink while a view is alive.
    fn map(&self, len: u64) -> io::Result<Arc<dyn ReadMap>>;
}

/// A read-only, memory-mapped view of a file.
pub trait ReadMap: Send + Sync + Debug {
    /// The mapped bytes. The slice starts page-aligned (so at least
    /// 8-byte aligned).
    fn bytes(&self) -> &[u8];
}

/// Holds a directory lock until dropped.
pub trait LockGuard: Send + Sync + Debug {}
