//! A simulated file system: in memory, deterministic given a seed, and
//! injecting the faults a real disk and a real power supply produce.
//!
//! [`SimStorage`] implements [`Storage`] so that tests can run the engine
//! against a disk that loses power at any sync point, tears pages and
//! writes, flips bits, fails syncs and fills up, and then check what the
//! engine recovers. Every random choice comes from one `SmallRng` seeded by
//! [`SimConfig::seed`]: the same seed and the same sequence of calls give
//! the same outcome. (Threads that call in a different order are a
//! different sequence of calls.)
//!
//! # Fault model, zone by zone
//!
//! ## Namespace (directory entries)
//!
//! There are two namespaces, each a map from path to inode: the *volatile*
//! one (what `open`, `list` and friends see) and the *durable* one (what
//! the directories hold on disk). `open(CreateNew)`, `remove` and `rename`
//! change the volatile namespace only. `sync_dir(dir)` copies the volatile
//! entries *directly inside `dir`* into the durable namespace: additions,
//! removals and both halves of a rename, each half in its own directory.
//! Paths are plain keys compared component by component: no `..`
//! resolution, no symlinks, no hard links.
//!
//! Directories themselves (`create_dir_all`) are durable as soon as they are
//! created and are never removed. `/` and the empty path (the current
//! directory) always exist.
//!
//! ## File data
//!
//! Each inode has *volatile* bytes (the page cache: what reads and maps see)
//! and *durable* bytes (what survives power loss), each with its own
//! length, and a set of *dirty* pages of `PAGE_BYTES` (4096): pages
//! written since the last `sync_data`. `write_all_at` changes volatile bytes only,
//! extending the file with zeros up to the write if needed, and marks the
//! pages it touched dirty. `sync_data` copies the dirty pages and the
//! length to the durable bytes and clears the dirty set. Invariant:
//! volatile and durable bytes differ only inside dirty pages and past the
//! durable length, which never exceeds the volatile length.
//!
//! ## Power loss
//!
//! A crash builds a *crash image* from the durable namespace: the namespace
//! becomes the durable namespace, and every inode in it gets new contents:
//! its durable bytes, overlaid page by page (in page order, inode by inode
//! in path order) with each dirty page's fate, drawn at random:
//!
//! - kept: the page's new (volatile) bytes;
//! - dropped: the page's old (durable) bytes;
//! - torn: a random prefix of the page's `SECTOR_BYTES` (512) sectors
//!   (at least one, and fewer than all when the page has two or more)
//!   holds new bytes, the rest old bytes.
//!
//! Length: if the file grew past its durable length, the new length
//! survives if and only if the file's last page was kept; otherwise the
//! durable length does (kept pages past it are cut off). Bytes between the
//! durable length and a surviving new length that no kept or torn page
//! covers read as zeros.
//!
//! After the image is installed, volatile equals durable and no page is
//! dirty; all directory locks are released (the process died); the *epoch*
//! is bumped, and every file handle of an older epoch fails every operation
//! with `io::ErrorKind::Other`, "simulated machine crashed". A map of an
//! older epoch keeps its bytes alive and readable (it holds an `Arc` to its
//! buffer) but never sees the crash image; a map taken after the crash does.
//!
//! [`SimStorage::crash`] loses power and installs the image at once.
//!
//! ## Sync points, failed syncs and crashes at a sync
//!
//! Every `sync_data` (on a live handle) and every `sync_dir` (of an
//! existing directory) on a live machine is a *sync point*, numbered from
//! 1 by one counter over the storage's whole life (reboots do not reset
//! it; [`SimStorage::sync_count`] reads it). A test can first run a workload to count its sync points, then
//! rerun it once per sync point with a crash there.
//!
//! - [`SimStorage::fail_sync_at`]`(n)`: sync point `n` returns EIO and
//!   changes nothing; later syncs work.
//! - [`SimStorage::crash_at_sync`]`(n)`: sync point `n` never completes. A
//!   crash image is taken at that moment (its own file's or directory's
//!   changes are still unsynced, so they are kept, dropped or torn like any
//!   other), the call returns EIO, and the machine is *dead*: every later
//!   operation on the storage or on any handle fails until
//!   [`SimStorage::reboot`] installs the image. If both faults name the
//!   same sync point, the crash wins.
//!
//! ## Torn writes
//!
//! [`SimStorage::tear_next_write`]: the next `write_all_at` that would
//! otherwise succeed writes a random strict prefix of its buffer (possibly
//! nothing) to the volatile bytes, then returns EIO. The machine stays
//! alive.
//!
//! ## Media corruption
//!
//! [`SimStorage::flip_bit`] flips one bit of a file in both its volatile and
//! its durable bytes, as a bad sector would.
//!
//! ## Free space
//!
//! [`SimStorage::set_available_bytes`]`(Some(n))` models a disk with `n`
//! bytes free from now on. The bytes in use are the volatile lengths of the
//! files in the volatile namespace: extending a file consumes free space,
//! and removing one (or replacing it by a rename) gives its space back at
//! once. A write that would extend a file past the free space fails with
//! ENOSPC and changes nothing. `None` means unlimited;
//! `available_bytes` then reports `UNLIMITED_AVAILABLE_BYTES` (2^50). No
//! file may grow past `FILE_BYTES_MAX` (4 GiB; EFBIG).
//!
//! ## Maps
//!
//! A map behaves like a shared, read-only `mmap`: its slice points into the
//! inode's volatile buffer, so later writes inside the mapped range are
//! visible through it. The buffer is a fixed allocation of whole,
//! page-aligned pages that is only reallocated when the file grows past it,
//! and a write that would extend a file while a map of it is alive fails
//! with `io::ErrorKind::Other` (the engine preallocates segment files to
//! their full size before it maps them, so it never does that). A reader of
//! a map must not read bytes that another thread is rewriting: the same
//! contract as for a real mmap of a file another descriptor writes, which
//! the engine keeps by reading only published ranges.
//!
//! ## Locks
//!
//! `lock(path)` creates the file if missing (like the real one, the entry
//! is durable only after `sync_dir`) and takes an in-memory exclusive lock
//! on the path until the guard drops. A second `lock` of a held path fails
//! with `io::ErrorKind::WouldBlock`. A crash releases every lock.

use std::cell::UnsafeCell;
use std::collections::{btree_map, BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{LockGuard, OpenMode, ReadMap, Storage, StorageFile};

/// The unit of dirtiness: power loss keeps, drops or tears each dirty page
/// on its own.
const PAGE_BYTES: usize = 4096;

/// The unit of atomicity inside a page: a torn page is a prefix of new
/// sectors followed by old ones.
const SECTOR_BYTES: usize = 512;

/// The largest file the simulation holds in memory.
const FILE_BYTES_MAX: u64 = 1 << 32;

/// What `available_bytes` reports when no limit is set.
const UNLIMITED_AVAILABLE_BYTES: u64 = 1 << 50;

/// `errno` values of the errors the simulation injects.
const EIO: i32 = 5;
const EBADF: i32 = 9;
const EFBIG: i32 = 27;
const ENOSPC: i32 = 28;

const _: () = assert!(PAGE_BYTES.is_multiple_of(SECTOR_BYTES));
const _: () = assert!(PAGE_BYTES.is_power_of_two());
const _: () = assert!(std::mem::size_of::<Page>() == PAGE_BYTES);
const _: () = assert!(std::mem::align_of::<Page>() == PAGE_BYTES);
const _: () = assert!(FILE_BYTES_MAX.is_multiple_of(PAGE_BYTES as u64));

/// How a [`SimStorage`] is set up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimConfig {
    /// Seeds every random choice: which unsynced pages a crash keeps, drops
    /// or tears, and where a torn write is cut.
    pub seed: u64,
}

/// An in-memory, deterministic, fault-injecting file system; see the
/// module documentation for its fault model.
///
/// Clones share one state, so a test can keep a handle to inject faults
/// and crash the machine while the engine owns another.
#[derive(Clone)]
pub struct SimStorage {
    state: Arc<Mutex<State>>,
}

type Namespace = BTreeMap<PathBuf, Arc<Inode>>;

/// Everything the simulated machine knows. One mutex guards it; inode
/// mutexes are only ever taken while holding it (lock order: state, then
/// one inode at a time).
struct State {
    rng: SmallRng,
    directories: BTreeSet<PathBuf>,
    namespace: Namespace,
    durable_namespace: Namespace,
    next_inode_id: u64,
    /// Bumped by every crash; handles of older epochs are dead.
    epoch: u64,
    /// `Some` while the machine is dead: the image `reboot` installs.
    crash_image: Option<CrashImage>,
    faults: Faults,
    sync_count: u64,
    /// Total bytes the disk may hold; `None` for unlimited.
    space_limit_bytes: Option<u64>,
    /// Held directory locks: path to the holder's token.
    locks: BTreeMap<PathBuf, u64>,
    next_lock_token: u64,
}

#[derive(Debug, Default)]
struct Faults {
    fail_sync_at: Option<u64>,
    crash_at_sync: Option<u64>,
    tear_next_write: bool,
}

/// What the disk holds after power loss: paths to (old) inode ids, and
/// each inode's surviving bytes.
#[derive(Debug, Default)]
struct CrashImage {
    namespace: BTreeMap<PathBuf, u64>,
    files: BTreeMap<u64, Vec<u8>>,
}

struct Inode {
    id: u64,
    data: Mutex<InodeData>,
}

struct InodeData {
    /// The page cache: what reads and maps see. Maps hold clones of this
    /// `Arc`, so it is never reallocated while one is alive.
    volatile: Arc<Buffer>,
    /// The volatile length; `volatile.capacity()` may be larger.
    len: usize,
    /// What survives power loss; its length is the durable length.
    durable: Vec<u8>,
    /// Indexes of the pages written since the last `sync_data`.
    dirty_pages: BTreeSet<usize>,
}

/// What power loss does to one dirty page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PageFate {
    Kept,
    Dropped,
    Torn,
}

/// One page of a volatile buffer. Page-sized and page-aligned, so that a
/// slice of pages is one contiguous, page-aligned run of bytes. (An
/// attribute cannot name `PAGE_BYTES`; the size and alignment are checked
/// against it above.)
#[repr(C, align(4096))]
struct Page(UnsafeCell<[u8; PAGE_BYTES]>);

/// A fixed-size, zero-initialised, page-aligned byte buffer that can be
/// written through a shared reference (like the page cache behind a
/// shared mmap).
struct Buffer {
    pages: Box<[Page]>,
}

// SAFETY: `Buffer` is `!Sync` only because of its `UnsafeCell`s. Every
// write goes through `Buffer::write_at`, which is only called with the
// owning inode's mutex held, so writes never race each other or the
// locked reads. Unlocked readers are maps, which obey the same contract
// as a real shared mmap (see `Buffer::write_at`).
unsafe impl Sync for Buffer {}

/// A handle to one open file.
struct SimFile {
    storage: SimStorage,
    inode: Arc<Inode>,
    epoch: u64,
    writable: bool,
}

/// A read-only view of the first `len` bytes of a volatile buffer.
struct SimMap {
    buffer: Arc<Buffer>,
    len: usize,
}

/// Holds a simulated directory lock until dropped.
#[derive(Debug)]
struct SimLock {
    storage: SimStorage,
    path: PathBuf,
    token: u64,
}

impl SimStorage {
    /// A machine with an empty disk (only `/` and the current directory
    /// exist), no faults armed and unlimited space.
    pub fn new(config: SimConfig) -> SimStorage {
        let state = State {
            rng: SmallRng::seed_from_u64(config.seed),
            directories: [PathBuf::new(), PathBuf::from("/")].into_iter().collect(),
            namespace: Namespace::new(),
            durable_namespace: Namespace::new(),
            next_inode_id: 0,
            epoch: 0,
            crash_image: None,
            faults: Faults::default(),
            sync_count: 0,
            space_limit_bytes: None,
            locks: BTreeMap::new(),
            next_lock_token: 0,
        };
        SimStorage {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// Power loss now, then restart: installs a crash image (see the
    /// module documentation) and kills every handle. On a machine that a
    /// crash at a sync point already killed, this is [`SimStorage::reboot`].
    pub fn crash(&self) {
        self.lock_state().restart();
    }

    /// Restarts the machine. After `crash_at_sync` killed it, installs the
    /// crash image taken at that sync point. On a live machine this is a
    /// power cycle, the same as [`SimStorage::crash`].
    pub fn reboot(&self) {
        self.lock_state().restart();
    }

    /// Whether a crash at a sync point has killed the machine (until
    /// [`SimStorage::reboot`]).
    pub fn is_dead(&self) -> bool {
        self.lock_state().crash_image.is_some()
    }

    /// How many sync points (`sync_data` and `sync_dir` calls on a live
    /// machine) there have been so far; the next one is number
    /// `sync_count() + 1`.
    pub fn sync_count(&self) -> u64 {
        self.lock_state().sync_count
    }

    /// Makes sync point `n` (counted from 1 over the storage's life) fail
    /// with EIO and change nothing. Replaces an earlier `fail_sync_at`.
    pub fn fail_sync_at(&self, n: u64) {
        assert!(n >= 1, "sync points are counted from 1");
        self.lock_state().faults.fail_sync_at = Some(n);
    }

    /// Makes sync point `n` (counted from 1 over the storage's life) a
    /// power loss: the call returns EIO and the machine is dead until
    /// [`SimStorage::reboot`]. Replaces an earlier `crash_at_sync`.
    pub fn crash_at_sync(&self, n: u64) {
        assert!(n >= 1, "sync points are counted from 1");
        self.lock_state().faults.crash_at_sync = Some(n);
    }

    /// Makes the next `write_all_at` that would otherwise succeed write a
    /// random strict prefix of its buffer, then return EIO.
    pub fn tear_next_write(&self) {
        self.lock_state().faults.tear_next_write = true;
    }

    /// From now on the disk has `available` bytes free (`None`: unlimited).
    pub fn set_available_bytes(&self, available: Option<u64>) {
        let mut state = self.lock_state();
        state.space_limit_bytes = available.map(|bytes| state.used_bytes().saturating_add(bytes));
    }

    /// Flips bit `bit` (0 is the least significant) of byte `byte_offset`
    /// of the file at `path`, in both its volatile and durable bytes.
    /// Errors if the machine is dead, the file does not exist, or the
    /// offset is past its volatile length.
    pub fn flip_bit(&self, path: &Path, byte_offset: u64, bit: u8) -> io::Result<()> {
        assert!(bit < 8, "a byte has 8 bits");
        let state = self.lock_state();
        state.check_alive()?;
        let inode = state.lookup(path)?;
        let mut data = inode.lock();
        let offset = usize::try_from(byte_offset)
            .ok()
            .filter(|&offset| offset < data.len)
            .ok_or_else(|| invalid_input("flip_bit past the end of the file"))?;
        data.flip_bit(offset, 1 << bit);
        Ok(())
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for SimStorage {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("SimStorage").finish_non_exhaustive()
    }
}

impl Storage for SimStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut state = self.lock_state();
        state.check_alive()?;
        let inode = match mode {
            OpenMode::Read | OpenMode::ReadWrite => state.lookup(path)?,
            OpenMode::CreateNew => state.create(path)?,
        };
        Ok(Arc::new(SimFile {
            storage: self.clone(),
            inode,
            epoch: state.epoch,
            writable: mode != OpenMode::Read,
        }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.lock_state();
        state.check_alive()?;
        state.check_directory(dir)?;
        let files = state.namespace.keys();
        let mut names: Vec<String> = files
            .chain(state.directories.iter())
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
            .collect();
        names.sort();
        Ok(names)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock_state();
        state.check_alive()?;
        if let Some(file) = dir.ancestors().find(|a| state.namespace.contains_key(*a)) {
            let message = format!("{} is a file", file.display());
            return Err(io::Error::new(io::ErrorKind::NotADirectory, message));
        }
        state.directories.extend(dir.ancestors().map(Path::to_path_buf));
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock_state();
        state.check_alive()?;
        state.lookup(path)?;
        state.namespace.remove(path);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock_state();
        state.check_alive()?;
        let inode = state.lookup(from)?;
        state.check_parent(to)?;
        if state.directories.contains(to) {
            return Err(is_a_directory(to));
        }
        state.namespace.remove(from);
        state.namespace.insert(to.to_path_buf(), inode);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock_state();
        state.check_alive()?;
        state.check_directory(dir)?;
        state.sync_point()?;
        state.sync_directory(dir);
        Ok(())
    }

    fn available_bytes(&self, dir: &Path) -> io::Result<u64> {
        let state = self.lock_state();
        state.check_alive()?;
        state.check_directory(dir)?;
        Ok(state.available_bytes())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        let mut state = self.lock_state();
        state.check_alive()?;
        if !state.namespace.contains_key(path) {
            state.create(path)?;
        }
        if state.locks.contains_key(path) {
            let message = "held by another process (simulated)";
            return Err(io::Error::new(io::ErrorKind::WouldBlock, message));
        }
        let token = state.next_lock_token;
        state.next_lock_token += 1;
        state.locks.insert(path.to_path_buf(), token);
        Ok(Box::new(SimLock {
            storage: self.clone(),
            path: path.to_path_buf(),
            token,
        }))
    }
}

impl State {
    fn check_alive(&self) -> io::Result<()> {
        match self.crash_image {
            Some(_) => Err(crashed()),
            None => Ok(()),
        }
    }

    fn check_handle(&self, epoch: u64) -> io::Result<()> {
        self.check_alive()?;
        if epoch != self.epoch {
            return Err(crashed());
        }
        Ok(())
    }

    fn check_directory(&self, dir: &Path) -> io::Result<()> {
        if self.directories.contains(dir) {
            return Ok(());
        }
        let message = format!("no directory {}", dir.display());
        Err(io::Error::new(io::ErrorKind::NotFound, message))
    }

    fn check_parent(&self, path: &Path) -> io::Result<()> {
        self.check_directory(path.parent().unwrap_or(Path::new("")))
    }

    /// The file at `path` in the volatile namespace.
    fn lookup(&self, path: &Path) -> io::Result<Arc<Inode>> {
        if self.directories.contains(path) {
            return Err(is_a_directory(path));
        }
        let inode = self.namespace.get(path).ok_or_else(|| {
            let message = format!("no file {}", path.display());
            io::Error::new(io::ErrorKind::NotFound, message)
        })?;
        Ok(Arc::clone(inode))
    }

    /// Creates an empty file at `path` in the volatile namespace.
    fn create(&mut self, path: &Path) -> io::Result<Arc<Inode>> {
        self.check_parent(path)?;
        if self.namespace.contains_key(path) || self.directories.contains(path) {
            let message = format!("{} exists", path.display());
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, message));
        }
        let inode = self.new_inode(InodeData::from_durable(Vec::new()));
        self.namespace.insert(path.to_path_buf(), Arc::clone(&inode));
        Ok(inode)
    }

    fn new_inode(&mut self, data: InodeData) -> Arc<Inode> {
        let id = self.next_inode_id;
        self.next_inode_id += 1;
        Arc::new(Inode {
            id,
            data: Mutex::new(data),
        })
    }

    /// Counts one sync point and injects the fault armed for it, if any.
    fn sync_point(&mut self) -> io::Result<()> {
        self.sync_count += 1;
        if self.faults.crash_at_sync == Some(self.sync_count) {
            tracing::debug!(sync_point = self.sync_count, "simulated crash at sync");
            self.power_loss();
            return Err(io::Error::from_raw_os_error(EIO));
        }
        if self.faults.fail_sync_at == Some(self.sync_count) {
            tracing::debug!(sync_point = self.sync_count, "simulated failed sync");
            return Err(io::Error::from_raw_os_error(EIO));
        }
        Ok(())
    }

    /// Copies the volatile entries directly inside `dir` to the durable
    /// namespace.
    fn sync_directory(&mut self, dir: &Path) {
        let in_dir = |path: &PathBuf| path.parent() == Some(dir);
        self.durable_namespace.retain(|path, _| !in_dir(path));
        let entries = self.namespace.iter().filter(|(path, _)| in_dir(path));
        let entries: Vec<_> = entries.map(|(p, i)| (p.clone(), Arc::clone(i))).collect();
        self.durable_namespace.extend(entries);
    }

    /// Takes a crash image unless the machine is already dead.
    fn power_loss(&mut self) {
        if self.crash_image.is_none() {
            let image = self.take_crash_image();
            self.crash_image = Some(image);
        }
    }

    /// Power loss if the machine is alive, then boots the crash image.
    fn restart(&mut self) {
        self.power_loss();
        if let Some(image) = self.crash_image.take() {
            self.install(image);
        }
    }

    fn take_crash_image(&mut self) -> CrashImage {
        let mut image = CrashImage::default();
        for (path, inode) in &self.durable_namespace {
            // An inode reachable by two paths gets one set of bytes.
            if let btree_map::Entry::Vacant(entry) = image.files.entry(inode.id) {
                entry.insert(inode.lock().crash_bytes(&mut self.rng));
            }
            image.namespace.insert(path.clone(), inode.id);
        }
        image
    }

    fn install(&mut self, image: CrashImage) {
        let mut inodes = BTreeMap::new();
        for (old_id, bytes) in image.files {
            inodes.insert(old_id, self.new_inode(InodeData::from_durable(bytes)));
        }
        // Indexing cannot panic: `take_crash_image` gives every inode id it
        // puts in the namespace its bytes.
        let namespace = image.namespace.into_iter();
        self.namespace = namespace.map(|(path, id)| (path, Arc::clone(&inodes[&id]))).collect();
        self.durable_namespace = self.namespace.clone();
        self.locks.clear();
        self.epoch += 1;
        tracing::debug!(epoch = self.epoch, "simulated machine rebooted");
    }

    /// Sum of the volatile lengths of the files in the volatile namespace.
    /// Takes each inode's mutex in turn: the caller must hold none.
    fn used_bytes(&self) -> u64 {
        let mut seen = BTreeSet::new();
        let mut used: u64 = 0;
        for inode in self.namespace.values() {
            if seen.insert(inode.id) {
                used = used.saturating_add(inode.lock().len as u64);
            }
        }
        used
    }

    fn available_bytes(&self) -> u64 {
        match self.space_limit_bytes {
            Some(limit) => limit.saturating_sub(self.used_bytes()),
            None => UNLIMITED_AVAILABLE_BYTES,
        }
    }

    /// Whether `inode` may grow to `end` bytes. The caller must hold no
    /// inode mutex.
    fn check_growth(&self, inode: &Inode, end: usize) -> io::Result<()> {
        let (len, mapped) = {
            let data = inode.lock();
            (data.len, data.is_mapped())
        };
        if end <= len {
            return Ok(());
        }
        if mapped {
            let message = "simulated storage: a mapped file cannot grow";
            return Err(io::Error::other(message));
        }
        if (end - len) as u64 > self.available_bytes() {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        Ok(())
    }

    /// How many of `len` bytes the next write writes: all of them, or a
    /// random strict prefix if a torn write is armed.
    fn write_length(&mut self, len: usize) -> usize {
        assert!(len > 0);
        if std::mem::take(&mut self.faults.tear_next_write) {
            tracing::debug!("simulated torn write");
            return self.rng.gen_range(0..len);
        }
        len
    }
}

impl Inode {
    fn lock(&self) -> MutexGuard<'_, InodeData> {
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl InodeData {
    /// A file whose volatile and durable bytes are both `durable`.
    fn from_durable(durable: Vec<u8>) -> InodeData {
        let volatile = Buffer::zeroed(durable.len());
        // SAFETY: the buffer is new: no map or other writer can see it.
        unsafe { volatile.write_at(0, &durable) };
        InodeData {
            volatile: Arc::new(volatile),
            len: durable.len(),
            durable,
            dirty_pages: BTreeSet::new(),
        }
    }

    fn is_mapped(&self) -> bool {
        Arc::strong_count(&self.volatile) > 1
    }

    fn volatile_bytes(&self) -> &[u8] {
        self.volatile.bytes(self.len)
    }

    /// Writes `bytes` at `offset` into the volatile bytes, zero-filling any
    /// gap past the end, and marks the touched pages dirty. The caller has
    /// checked that the file may grow to `offset + bytes.len()`.
    fn write(&mut self, offset: usize, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let end = offset + bytes.len();
        if end > self.len {
            self.grow(end);
        }
        // SAFETY: `&mut self` means we hold this inode's mutex, so we are
        // its only writer; `grow` made the buffer hold `end` bytes.
        unsafe { self.volatile.write_at(offset, bytes) };
        self.dirty_pages.extend(offset / PAGE_BYTES..=(end - 1) / PAGE_BYTES);
    }

    /// Extends the volatile length to `end`, with zeros.
    fn grow(&mut self, end: usize) {
        assert!(end > self.len);
        assert!(!self.is_mapped(), "the caller checked that no map is alive");
        if end > self.volatile.capacity() {
            let capacity = end.max(self.volatile.capacity() * 2);
            let capacity = capacity.min(FILE_BYTES_MAX as usize).max(end);
            let buffer = Buffer::zeroed(capacity);
            // SAFETY: the buffer is new: no map or other writer can see it.
            unsafe { buffer.write_at(0, self.volatile_bytes()) };
            self.volatile = Arc::new(buffer);
        }
        let zeros = vec![0; end - self.len];
        // SAFETY: as in `write`; the buffer holds `end` bytes.
        unsafe { self.volatile.write_at(self.len, &zeros) };
        self.len = end;
    }

    fn read(&self, offset: usize, out: &mut [u8]) {
        out.copy_from_slice(&self.volatile_bytes()[offset..offset + out.len()]);
    }

    /// `sync_data`: the dirty pages and the length become durable.
    fn sync(&mut self) {
        assert!(self.durable.len() <= self.len);
        self.durable.resize(self.len, 0);
        let volatile = self.volatile.bytes(self.len);
        for &page in &self.dirty_pages {
            let range = page_range(page, self.len);
            self.durable[range.clone()].copy_from_slice(&volatile[range]);
        }
        self.dirty_pages.clear();
    }

    /// What power loss leaves of this file (see the module documentation).
    fn crash_bytes(&self, rng: &mut SmallRng) -> Vec<u8> {
        assert!(self.durable.len() <= self.len);
        let last_page = self.len.checked_sub(1).map(|last| last / PAGE_BYTES);
        let mut image = self.durable.clone();
        image.resize(self.len, 0);
        let mut last_page_kept = false;
        for &page in &self.dirty_pages {
            let fate = random_fate(rng);
            let range = page_range(page, self.len);
            let new_end = match fate {
                PageFate::Kept => range.end,
                PageFate::Dropped => range.start,
                PageFate::Torn => torn_end(&range, rng),
            };
            image[range.start..new_end].copy_from_slice(&self.volatile_bytes()[range.start..new_end]);
            last_page_kept |= fate == PageFate::Kept && Some(page) == last_page;
        }
        let len = if last_page_kept { self.len } else { self.durable.len() };
        image.truncate(len);
        image
    }

    fn flip_bit(&mut self, offset: usize, mask: u8) {
        let byte = self.volatile_bytes()[offset] ^ mask;
        // SAFETY: as in `write`; `offset` is inside the volatile length.
        unsafe { self.volatile.write_at(offset, &[byte]) };
        if let Some(durable) = self.durable.get_mut(offset) {
            *durable ^= mask;
        }
    }
}

fn random_fate(rng: &mut SmallRng) -> PageFate {
    match rng.gen_range(0..3) {
        0 => PageFate::Kept,
        1 => PageFate::Dropped,
        _ => PageFate::Torn,
    }
}

/// Where the new bytes of a torn page end: after a random number of its
/// sectors, at least one and fewer than all if it has two or more.
fn torn_end(range: &Range<usize>, rng: &mut SmallRng) -> usize {
    let sectors = range.len().div_ceil(SECTOR_BYTES);
    let new_sectors = if sectors >= 2 {
        rng.gen_range(1..sectors)
    } else {
        rng.gen_range(0..=sectors)
    };
    (range.start + new_sectors * SECTOR_BYTES).min(range.end)
}

/// The bytes of page `page` in a file of `len` bytes.
fn page_range(page: usize, len: usize) -> Range<usize> {
    let start = page * PAGE_BYTES;
    assert!(start < len);
    start..(start + PAGE_BYTES).min(len)
}

impl Page {
    fn zeroed() -> Page {
        Page(UnsafeCell::new([0; PAGE_BYTES]))
    }
}

impl Buffer {
    /// A buffer of at least `bytes` zero bytes, in whole pages.
    fn zeroed(bytes: usize) -> Buffer {
        let pages = (0..bytes.div_ceil(PAGE_BYTES)).map(|_| Page::zeroed());
        Buffer { pages: pages.collect() }
    }

    fn capacity(&self) -> usize {
        self.pages.len() * PAGE_BYTES
    }

    /// The first byte. `Page` is `repr(C)` with its bytes at offset 0 and
    /// no padding (size == `PAGE_BYTES`), so the pages form one run of
    /// `capacity()` bytes, all inside `UnsafeCell`s. The pointer is derived
    /// from the whole slice, so it may reach every page.
    fn base(&self) -> *mut u8 {
        let first = self.pages.as_ptr().cast::<UnsafeCell<[u8; PAGE_BYTES]>>();
        UnsafeCell::raw_get(first).cast::<u8>()
    }

    /// The first `len` bytes.
    fn bytes(&self, len: usize) -> &[u8] {
        assert!(len <= self.capacity());
        // SAFETY: `base` is valid and page-aligned (dangling but aligned
        // when the buffer is empty and `len` is 0) for `capacity()` bytes,
        // which are initialised and live as long as `self`. Writers hold
        // the inode mutex; a caller that holds it too sees no concurrent
        // write, and a map's reader keeps the mmap contract documented on
        // `write_at`.
        unsafe { std::slice::from_raw_parts(self.base(), len) }
    }

    /// Copies `bytes` to `offset`.
    ///
    /// # Safety
    ///
    /// The caller must be the only writer (it holds the owning inode's
    /// mutex, or the buffer is not shared yet) and no slice from `bytes`
    /// that covers `offset..offset + bytes.len()` may be in use. For maps
    /// this is the engine's mmap contract: a reader never reads a range
    /// that is being rewritten (see the `SAFETY` comment of `OsFile::map`).
    unsafe fn write_at(&self, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= self.capacity());
        // SAFETY: `offset` is inside the allocation (checked above).
        let destination = unsafe { self.base().add(offset) };
        // SAFETY: the range is inside the buffer (checked above), inside
        // `UnsafeCell`s, and no one else accesses it (the caller's
        // contract); `bytes` cannot overlap it because no `&mut` to the
        // buffer exists and the caller holds no slice covering it.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), destination, bytes.len()) };
    }
}

impl SimFile {
    fn check_writable(&self) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::from_raw_os_error(EBADF));
        }
        Ok(())
    }
}

impl fmt::Debug for SimFile {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SimFile")
            .field("inode", &self.inode.id)
            .field("epoch", &self.epoch)
            .field("writable", &self.writable)
            .finish()
    }
}

impl StorageFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let state = self.storage.lock_state();
        state.check_handle(self.epoch)?;
        let data = self.inode.lock();
        match end_offset(offset, buf.len()) {
            Some(end) if end <= data.len => {
                data.read(end - buf.len(), buf);
                Ok(())
            }
            _ => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end")),
        }
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.storage.lock_state();
        state.check_handle(self.epoch)?;
        self.check_writable()?;
        if buf.is_empty() {
            return Ok(());
        }
        let end = end_offset(offset, buf.len())
            .filter(|&end| end as u64 <= FILE_BYTES_MAX)
            .ok_or_else(|| io::Error::from_raw_os_error(EFBIG))?;
        state.check_growth(&self.inode, end)?;
        let written = state.write_length(buf.len());
        self.inode.lock().write(end - buf.len(), &buf[..written]);
        if written < buf.len() {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.storage.lock_state();
        state.check_handle(self.epoch)?;
        state.sync_point()?;
        self.inode.lock().sync();
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let state = self.storage.lock_state();
        state.check_handle(self.epoch)?;
        let len = self.inode.lock().len;
        Ok(len as u64)
    }

    fn map(&self, len: u64) -> io::Result<Arc<dyn ReadMap>> {
        let state = self.storage.lock_state();
        state.check_handle(self.epoch)?;
        let data = self.inode.lock();
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= data.len)
            .ok_or_else(|| invalid_input("map past the end of the file"))?;
        // An empty view pins no buffer, so it does not stop the file from
        // growing.
        let buffer = match len {
            0 => Arc::new(Buffer::zeroed(0)),
            _ => Arc::clone(&data.volatile),
        };
        Ok(Arc::new(SimMap { buffer, len }))
    }
}

impl fmt::Debug for SimMap {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("SimMap").field("len", &self.len).finish()
    }
}

impl ReadMap for SimMap {
    fn bytes(&self) -> &[u8] {
        self.buffer.bytes(self.len)
    }
}

impl LockGuard for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut state = self.storage.lock_state();
        // After a crash the lock may belong to a new holder: release only
        // our own.
        if state.locks.get(&self.path) == Some(&self.token) {
            state.locks.remove(&self.path);
        }
    }
}

/// `offset + len` as a `usize`, if it fits.
fn end_offset(offset: u64, len: usize) -> Option<usize> {
    usize::try_from(offset).ok()?.checked_add(len)
}

fn crashed() -> io::Error {
    io::Error::other("simulated machine crashed")
}

fn invalid_input(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

fn is_a_directory(path: &Path) -> io::Error {
    let message = format!("{} is a directory", path.display());
    io::Error::new(io::ErrorKind::IsADirectory, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = "/data";

    /// A fresh machine with the directory `DIR`.
    fn machine(seed: u64) -> SimStorage {
        let storage = SimStorage::new(SimConfig { seed });
        storage.create_dir_all(Path::new(DIR)).unwrap();
        storage
    }

    fn path(name: &str) -> PathBuf {
        Path::new(DIR).join(name)
    }

    /// Creates `name` holding `bytes`; nothing synced.
    fn create(storage: &SimStorage, name: &str, bytes: &[u8]) -> Arc<dyn StorageFile> {
        let file = storage.open(&path(name), OpenMode::CreateNew).unwrap();
        file.write_all_at(bytes, 0).unwrap();
        file
    }

    /// Creates `name` holding `bytes`, with its data and entry durable.
    fn create_durable(storage: &SimStorage, name: &str, bytes: &[u8]) -> Arc<dyn StorageFile> {
        let file = create(storage, name, bytes);
        file.sync_data().unwrap();
        storage.sync_dir(Path::new(DIR)).unwrap();
        file
    }

    /// The whole contents of `name`, or `None` if it does not exist.
    fn contents(storage: &SimStorage, name: &str) -> Option<Vec<u8>> {
        let file = match storage.open(&path(name), OpenMode::Read) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return None,
            Err(error) => panic!("open {name}: {error}"),
        };
        let mut bytes = vec![0; file.len().unwrap() as usize];
        file.read_exact_at(&mut bytes, 0).unwrap();
        Some(bytes)
    }

    fn assert_crashed<T: fmt::Debug>(result: io::Result<T>) {
        let error = result.expect_err("the machine crashed");
        assert_eq!(error.kind(), io::ErrorKind::Other);
        assert_eq!(error.to_string(), "simulated machine crashed");
    }

    fn assert_errno<T: fmt::Debug>(result: io::Result<T>, errno: i32) {
        assert_eq!(result.expect_err("an injected error").raw_os_error(), Some(errno));
    }

    /// A pattern that differs from page to page and byte to byte.
    fn pattern(len: usize, salt: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ (i / PAGE_BYTES) as u8 ^ salt)
            .collect()
    }

    #[test]
    fn synced_data_survives_crash() {
        for seed in 0..32 {
            let storage = machine(seed);
            let bytes = pattern(3 * PAGE_BYTES + 100, 1);
            create_durable(&storage, "a", &bytes);
            storage.crash();
            assert_eq!(contents(&storage, "a"), Some(bytes));
        }
    }

    /// What a crash did to one page that held `old` bytes (synced) and
    /// then `new` bytes (not synced).
    fn page_fate(page: &[u8], old: u8, new: u8) -> PageFate {
        let new_prefix = page.iter().take_while(|&&byte| byte == new).count();
        assert!(page[new_prefix..].iter().all(|&byte| byte == old), "{page:?}");
        match new_prefix {
            0 => PageFate::Dropped,
            PAGE_BYTES => PageFate::Kept,
            torn => {
                assert_eq!(torn % SECTOR_BYTES, 0, "torn at a sector boundary");
                PageFate::Torn
            }
        }
    }

    #[test]
    fn unsynced_page_is_kept_dropped_or_torn() {
        let mut fates = BTreeMap::new();
        for seed in 0..100 {
            let storage = machine(seed);
            let file = create_durable(&storage, "a", &[0xAA; PAGE_BYTES]);
            file.write_all_at(&[0xBB; PAGE_BYTES], 0).unwrap();
            storage.crash();
            let page = contents(&storage, "a").unwrap();
            assert_eq!(page.len(), PAGE_BYTES);
            *fates.entry(page_fate(&page, 0xAA, 0xBB)).or_insert(0) += 1;
        }
        assert_eq!(fates.len(), 3, "every fate occurs: {fates:?}");
    }

    #[test]
    fn unsynced_growth_survives_only_with_its_last_page() {
        let mut lengths = BTreeSet::new();
        for seed in 0..50 {
            let storage = machine(seed);
            let file = create_durable(&storage, "a", &[0xAA; PAGE_BYTES]);
            file.write_all_at(&[0xBB; 2 * PAGE_BYTES], PAGE_BYTES as u64).unwrap();
            storage.crash();
            let bytes = contents(&storage, "a").unwrap();
            assert_eq!(bytes[..PAGE_BYTES], [0xAA; PAGE_BYTES]);
            if bytes.len() > PAGE_BYTES {
                assert_eq!(bytes.len(), 3 * PAGE_BYTES);
                assert_eq!(bytes[2 * PAGE_BYTES..], [0xBB; PAGE_BYTES], "last page kept");
                let middle = &bytes[PAGE_BYTES..2 * PAGE_BYTES];
                page_fate(middle, 0, 0xBB);
            }
            lengths.insert(bytes.len());
        }
        let expected: BTreeSet<usize> = [PAGE_BYTES, 3 * PAGE_BYTES].into();
        assert_eq!(lengths, expected);
    }

    #[test]
    fn unsynced_create_vanishes_unless_dir_synced() {
        let storage = machine(0);
        let file = create(&storage, "a", b"hello");
        file.sync_data().unwrap();
        assert_eq!(storage.list(Path::new(DIR)).unwrap(), ["a"]);
        storage.crash();
        assert_eq!(contents(&storage, "a"), None);
        assert!(storage.list(Path::new(DIR)).unwrap().is_empty());

        create_durable(&storage, "b", b"world");
        storage.crash();
        assert_eq!(contents(&storage, "b"), Some(b"world".to_vec()));
    }

    #[test]
    fn remove_not_dir_synced_reappears() {
        let storage = machine(0);
        create_durable(&storage, "a", b"hello");
        storage.remove(&path("a")).unwrap();
        assert_eq!(contents(&storage, "a"), None);
        storage.crash();
        assert_eq!(contents(&storage, "a"), Some(b"hello".to_vec()));

        storage.remove(&path("a")).unwrap();
        storage.sync_dir(Path::new(DIR)).unwrap();
        storage.crash();
        assert_eq!(contents(&storage, "a"), None);
    }

    #[test]
    fn rename_is_durable_only_after_sync_dir() {
        let storage = machine(0);
        create_durable(&storage, "old", b"old");
        create_durable(&storage, "tmp", b"new");
        storage.rename(&path("tmp"), &path("old")).unwrap();
        assert_eq!(storage.list(Path::new(DIR)).unwrap(), ["old"]);
        assert_eq!(contents(&storage, "old"), Some(b"new".to_vec()));
        storage.crash();
        assert_eq!(contents(&storage, "old"), Some(b"old".to_vec()));
        assert_eq!(contents(&storage, "tmp"), Some(b"new".to_vec()));

        storage.rename(&path("tmp"), &path("old")).unwrap();
        storage.sync_dir(Path::new(DIR)).unwrap();
        storage.crash();
        assert_eq!(storage.list(Path::new(DIR)).unwrap(), ["old"]);
        assert_eq!(contents(&storage, "old"), Some(b"new".to_vec()));
    }

    /// Three sync points: the data of `a`, its entry, more data.
    fn workload(storage: &SimStorage) -> io::Result<Arc<dyn StorageFile>> {
        let file = storage.open(&path("a"), OpenMode::CreateNew)?;
        file.write_all_at(&[1; PAGE_BYTES], 0)?;
        file.sync_data()?;
        storage.sync_dir(Path::new(DIR))?;
        file.write_all_at(&[2; PAGE_BYTES], PAGE_BYTES as u64)?;
        file.sync_data()?;
        Ok(file)
    }

    #[test]
    fn crash_at_sync_kills_the_machine_until_reboot() {
        let counting = machine(7);
        workload(&counting).unwrap();
        let sync_points = counting.sync_count();
        assert_eq!(sync_points, 3);

        for crash_at in 1..=sync_points {
            let storage = machine(7);
            let file = storage.open(&path("before"), OpenMode::CreateNew).unwrap();
            storage.crash_at_sync(crash_at);
            assert_errno(workload(&storage), EIO);
            assert_eq!(storage.sync_count(), crash_at);
            assert!(storage.is_dead());
            assert_crashed(storage.open(&path("a"), OpenMode::Read));
            assert_crashed(storage.list(Path::new(DIR)));
            assert_crashed(storage.available_bytes(Path::new(DIR)));
            assert_crashed(storage.lock(&path("LOCK")));
            assert_crashed(storage.sync_dir(Path::new(DIR)));
            assert_crashed(file.len());
            assert_eq!(storage.sync_count(), crash_at, "a dead machine has no sync points");

            storage.reboot();
            assert!(!storage.is_dead());
            assert_crashed(file.write_all_at(b"x", 0));
            let a = contents(&storage, "a");
            match crash_at {
                1 | 2 => assert_eq!(a, None, "entry not durable before sync point 2 completes"),
                _ => assert_eq!(a.unwrap()[..PAGE_BYTES], [1; PAGE_BYTES]),
            }
        }
    }

    #[test]
    fn failed_sync_changes_nothing_and_later_syncs_work() {
        let mut lost = 0;
        for seed in 0..50 {
            let storage = machine(seed);
            let file = create_durable(&storage, "a", &[0xAA; PAGE_BYTES]);
            file.write_all_at(&[0xBB; PAGE_BYTES], 0).unwrap();
            storage.fail_sync_at(storage.sync_count() + 1);
            assert_errno(file.sync_data(), EIO);
            assert!(!storage.is_dead());
            storage.crash();
            if contents(&storage, "a").unwrap() != [0xBB; PAGE_BYTES] {
                lost += 1;
            }
        }
        assert!(lost > 0, "a failed sync made nothing durable");

        let storage = machine(0);
        let file = create_durable(&storage, "a", &[0xAA; PAGE_BYTES]);
        file.write_all_at(&[0xBB; PAGE_BYTES], 0).unwrap();
        storage.fail_sync_at(storage.sync_count() + 1);
        assert_errno(file.sync_data(), EIO);
        file.sync_data().unwrap();
        storage.crash();
        assert_eq!(contents(&storage, "a"), Some(vec![0xBB; PAGE_BYTES]));
    }

    #[test]
    fn torn_write_writes_a_strict_prefix() {
        let mut prefixes = BTreeSet::new();
        for seed in 0..20 {
            let storage = machine(seed);
            let file = create(&storage, "a", &[]);
            storage.tear_next_write();
            assert_errno(file.write_all_at(&[0xCC; 1000], 0), EIO);
            let written = file.len().unwrap() as usize;
            assert!(written < 1000);
            assert_eq!(contents(&storage, "a"), Some(vec![0xCC; written]));
            prefixes.insert(written);

            file.write_all_at(&[0xDD; 1000], 0).unwrap();
            assert_eq!(contents(&storage, "a"), Some(vec![0xDD; 1000]));
        }
        assert!(prefixes.len() > 1, "the cut is random: {prefixes:?}");
    }

    #[test]
    fn full_disk_fails_growth_and_remove_returns_space() {
        let storage = machine(0);
        let dir = Path::new(DIR);
        assert_eq!(storage.available_bytes(dir).unwrap(), UNLIMITED_AVAILABLE_BYTES);
        storage.set_available_bytes(Some(10_000));
        assert_eq!(storage.available_bytes(dir).unwrap(), 10_000);

        let a = create(&storage, "a", &[1; 8192]);
        assert_eq!(storage.available_bytes(dir).unwrap(), 1808);
        assert_errno(a.write_all_at(&[2; 4096], 8192), ENOSPC);
        assert_eq!(a.len().unwrap(), 8192);
        assert_eq!(contents(&storage, "a"), Some(vec![1; 8192]));
        a.write_all_at(&[3; 4096], 4096).unwrap();

        let b = create(&storage, "b", &[4; 1808]);
        assert_eq!(storage.available_bytes(dir).unwrap(), 0);
        assert_errno(b.write_all_at(&[5], 1808), ENOSPC);
        storage.remove(&path("a")).unwrap();
        assert_eq!(storage.available_bytes(dir).unwrap(), 8192);
        b.write_all_at(&[5], 1808).unwrap();

        storage.set_available_bytes(None);
        assert_eq!(storage.available_bytes(dir).unwrap(), UNLIMITED_AVAILABLE_BYTES);
    }

    #[test]
    fn map_sees_later_writes_and_pins_the_length() {
        let storage = machine(0);
        let file = create(&storage, "a", &[0; 2 * PAGE_BYTES]);
        let map = file.map(2 * PAGE_BYTES as u64).unwrap();
        assert_eq!(map.bytes().as_ptr() as usize % PAGE_BYTES, 0, "page-aligned");
        assert_eq!(map.bytes(), [0; 2 * PAGE_BYTES]);

        file.write_all_at(&[7; 100], 4000).unwrap();
        assert_eq!(map.bytes()[4000..4100], [7; 100]);
        assert_eq!(map.bytes()[3999], 0);
        assert_eq!(map.bytes()[4100], 0);

        let error = file.write_all_at(&[1], 2 * PAGE_BYTES as u64).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::Other);
        assert_eq!(file.len().unwrap(), 2 * PAGE_BYTES as u64);
        let past_end = file.map(2 * PAGE_BYTES as u64 + 1).unwrap_err();
        assert_eq!(past_end.kind(), io::ErrorKind::InvalidInput);

        let empty = file.map(0).unwrap();
        assert!(empty.bytes().is_empty());
        drop(map);
        file.write_all_at(&[1], 2 * PAGE_BYTES as u64).unwrap();
        assert_eq!(file.len().unwrap(), 2 * PAGE_BYTES as u64 + 1);
    }

    #[test]
    fn maps_outlive_a_crash_and_new_maps_see_the_image() {
        let storage = machine(0);
        let file = create_durable(&storage, "a", &[1; PAGE_BYTES]);
        file.write_all_at(&[2; PAGE_BYTES], 0).unwrap();
        let old_map = file.map(PAGE_BYTES as u64).unwrap();
        storage.crash();
        assert_eq!(old_map.bytes(), [2; PAGE_BYTES], "the old page cache, still alive");
        assert_crashed(file.map(PAGE_BYTES as u64));

        let image = contents(&storage, "a").unwrap();
        let reopened = storage.open(&path("a"), OpenMode::ReadWrite).unwrap();
        let new_map = reopened.map(PAGE_BYTES as u64).unwrap();
        assert_eq!(new_map.bytes(), image);
        reopened.write_all_at(&[3; 10], 0).unwrap();
        assert_eq!(new_map.bytes()[..10], [3; 10]);
        assert_eq!(old_map.bytes()[..10], [2; 10]);
    }

    #[test]
    fn old_handles_die_at_a_crash() {
        let storage = machine(0);
        let file = create_durable(&storage, "a", b"hello");
        storage.crash();
        let mut buf = [0; 5];
        assert_crashed(file.read_exact_at(&mut buf, 0));
        assert_crashed(file.write_all_at(b"x", 0));
        assert_crashed(file.sync_data());
        assert_crashed(file.len());
        let reopened = storage.open(&path("a"), OpenMode::Read).unwrap();
        reopened.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"hello");
    }

    #[test]
    fn lock_is_exclusive_and_a_crash_releases_it() {
        let storage = machine(0);
        let lock_path = path("LOCK");
        let first = storage.lock(&lock_path).unwrap();
        let again = storage.lock(&lock_path).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(storage.list(Path::new(DIR)).unwrap(), ["LOCK"]);
        drop(first);
        let second = storage.lock(&lock_path).unwrap();

        storage.crash();
        let third = storage.lock(&lock_path).unwrap();
        drop(second);
        let error = storage.lock(&lock_path).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock, "a dead guard frees nothing");
        drop(third);
        storage.lock(&lock_path).unwrap();
    }

    #[test]
    fn flipped_bit_is_in_volatile_and_durable_bytes() {
        let storage = machine(0);
        create_durable(&storage, "a", &[0; 100]);
        storage.flip_bit(&path("a"), 10, 3).unwrap();
        let mut expected = vec![0; 100];
        expected[10] = 0b1000;
        assert_eq!(contents(&storage, "a"), Some(expected.clone()));
        storage.crash();
        assert_eq!(contents(&storage, "a"), Some(expected));
        let past_end = storage.flip_bit(&path("a"), 100, 0).unwrap_err();
        assert_eq!(past_end.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn same_seed_same_crash_image() {
        let run = |seed| {
            let storage = machine(seed);
            let file = create_durable(&storage, "a", &pattern(16 * PAGE_BYTES, 1));
            file.write_all_at(&pattern(16 * PAGE_BYTES, 2), 0).unwrap();
            storage.crash();
            contents(&storage, "a")
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43), "16 pages, three fates each: seeds differ");
    }

    #[test]
    fn namespace_errors_match_a_real_file_system() {
        let storage = machine(0);
        storage.create_dir_all(&path("sub/deeper")).unwrap();
        create(&storage, "b", b"");
        create(&storage, "a", b"12");
        assert_eq!(storage.list(Path::new(DIR)).unwrap(), ["a", "b", "sub"]);

        let kind = |result: io::Result<Arc<dyn StorageFile>>| result.unwrap_err().kind();
        let missing_dir = Path::new("/missing/a");
        assert_eq!(
            kind(storage.open(missing_dir, OpenMode::CreateNew)),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            kind(storage.open(&path("a"), OpenMode::CreateNew)),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(kind(storage.open(&path("c"), OpenMode::Read)), io::ErrorKind::NotFound);
        let listed = storage.list(Path::new("/missing")).unwrap_err();
        assert_eq!(listed.kind(), io::ErrorKind::NotFound);

        let read_only = storage.open(&path("a"), OpenMode::Read).unwrap();
        assert_errno(read_only.write_all_at(b"x", 0), EBADF);
        let mut buf = [0; 3];
        let eof = read_only.read_exact_at(&mut buf, 0).unwrap_err();
        assert_eq!(eof.kind(), io::ErrorKind::UnexpectedEof);
        read_only.read_exact_at(&mut buf[..2], 0).unwrap();
        assert_eq!(&buf[..2], b"12");
    }

    #[test]
    fn handles_are_usable_from_many_threads() {
        let storage = machine(0);
        let file = create(&storage, "a", &[0; 8 * PAGE_BYTES]);
        let map = file.map(8 * PAGE_BYTES as u64).unwrap();
        std::thread::scope(|scope| {
            for thread in 0..8u8 {
                let file = Arc::clone(&file);
                scope.spawn(move || {
                    let offset = thread as u64 * PAGE_BYTES as u64;
                    file.write_all_at(&[thread + 1; PAGE_BYTES], offset).unwrap();
                    file.sync_data().unwrap();
                });
            }
        });
        for (page, bytes) in map.bytes().chunks(PAGE_BYTES).enumerate() {
            assert!(bytes.iter().all(|&byte| byte == page as u8 + 1));
        }
    }
}
