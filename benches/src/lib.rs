//! Shared workloads for farmlog's benchmarks.
//!
//! The criterion suites (`benches/*.rs`) and the ratio report
//! (`src/bin/report.rs`) run the same code, so that a figure in one can be
//! compared with the other:
//!
//! - [`scratch`]: where benchmark files live (a real disk, never tmpfs).
//! - [`raw`]: the disk's own limits with the engine's write pattern:
//!   overwriting preallocated zeros with `pwrite` + `fdatasync`.
//! - [`workload`]: the engine under load: concurrent durable appenders,
//!   log building, sequential and random reads, open.
//!
//! Invariant: every loop here is bounded twice, by a count and by a time
//! ([`RunLimit`]), so a slow disk makes a run shorter, never endless.

pub mod raw;
pub mod scratch;
pub mod workload;

use std::time::Duration;

/// Errors of benchmark set-up and runs: engine and I/O errors alike.
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;
pub type BenchResult<T> = Result<T, BenchError>;

/// One KiB, for sizes written as `64 * KIB`.
pub const KIB: usize = 1 << 10;
/// One MiB.
pub const MIB: usize = 1 << 20;
/// One GiB.
pub const GIB: u64 = 1 << 30;

/// How long a run may go on: it stops at whichever bound it meets first.
#[derive(Clone, Copy, Debug)]
pub struct RunLimit {
    /// Operations (appends, syncs, reads) at most.
    pub operations_max: u64,
    /// Wall-clock time at most. A run checks it between operations, so it
    /// can overshoot by one operation.
    pub time_max: Duration,
}

impl RunLimit {
    /// Exactly `operations` unless `time_max` runs out first (criterion's
    /// `iter_custom`: see [`Measured::elapsed_for`]).
    pub fn count(operations: u64, time_max: Duration) -> Self {
        assert!(operations > 0);
        Self {
            operations_max: operations,
            time_max,
        }
    }
}

/// What a bounded run did, and how long it took.
#[derive(Clone, Copy, Debug, Default)]
pub struct Measured {
    /// Operations completed (appends, syncs, reads, passes).
    pub operations: u64,
    /// Records among them (appends of batches count each record).
    pub records: u64,
    /// Payload bytes among them.
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Measured {
    pub fn records_per_second(&self) -> f64 {
        self.records as f64 / self.seconds()
    }

    pub fn bytes_per_second(&self) -> f64 {
        self.bytes as f64 / self.seconds()
    }

    pub fn operations_per_second(&self) -> f64 {
        self.operations as f64 / self.seconds()
    }

    /// The time `operations` would have taken at this run's rate: equal to
    /// `elapsed` when the run completed its count, extrapolated when its
    /// time bound cut it short. For criterion's `iter_custom`.
    pub fn elapsed_for(&self, operations: u64) -> Duration {
        if self.operations >= operations || self.operations == 0 {
            return self.elapsed;
        }
        self.elapsed.mul_f64(operations as f64 / self.operations as f64)
    }

    fn seconds(&self) -> f64 {
        self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// This run followed by `other`: counts and times added.
    pub fn plus(self, other: Measured) -> Measured {
        Measured {
            operations: self.operations + other.operations,
            records: self.records + other.records,
            bytes: self.bytes + other.bytes,
            elapsed: self.elapsed + other.elapsed,
        }
    }
}

/// Calls `run` until `limit` says stop (its time bound is on the wall
/// clock), and adds up what the calls measured. Time between calls, and
/// whatever a call leaves out of its own measurement, is not counted.
pub fn repeat(limit: RunLimit, mut run: impl FnMut() -> BenchResult<Measured>) -> BenchResult<Measured> {
    let start = std::time::Instant::now();
    let mut total = Measured::default();
    while total.operations < limit.operations_max && start.elapsed() < limit.time_max {
        total = total.plus(run()?);
    }
    Ok(total)
}

/// A deterministic payload of `len` bytes: see [`fill_payload`].
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0; len];
    fill_payload(&mut bytes, seed);
    bytes
}

/// Fills `bytes` with pseudo-random letters from a 16-letter alphabet
/// (4 bits of entropy per byte), different for every `seed`. zstd
/// compresses such data about 2:1, like typical text-ish records, so the
/// compressed-segment figures measure real decompression work, not a
/// degenerate run of repeats.
pub fn fill_payload(bytes: &mut [u8], seed: u64) {
    // xorshift64*; the state must not be zero.
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let (words, tail) = bytes.as_chunks_mut::<8>();
    for word in words {
        *word = letters(next()).to_le_bytes();
    }
    let last = letters(next()).to_le_bytes();
    tail.copy_from_slice(&last[..tail.len()]);
}

/// Eight random nibbles as eight letters 'a'..='p'.
fn letters(random: u64) -> u64 {
    (random & 0x0f0f_0f0f_0f0f_0f0f) + 0x6161_6161_6161_6161
}

/// Sums a payload as little-endian u64 words (and its tail bytes): a cheap
/// pass that really touches every byte, so a zero-copy read is not
/// optimized away.
pub fn touch(payload: &[u8]) -> u64 {
    let (words, tail) = payload.as_chunks::<8>();
    let sum = words
        .iter()
        .fold(0u64, |sum, word| sum.wrapping_add(u64::from_le_bytes(*word)));
    tail.iter().fold(sum, |sum, byte| sum.wrapping_add(u64::from(*byte)))
}

/// Reads an environment variable as a number of bytes (plain digits, or
/// with a `K`, `M` or `G` binary suffix), or returns `default`.
pub fn env_bytes(name: &str, default: u64) -> BenchResult<u64> {
    let Ok(text) = std::env::var(name) else {
        return Ok(default);
    };
    parse_bytes(&text).ok_or_else(|| format!("{name}={text:?} is not a size like 4294967296, 512M or 4G").into())
}

/// Reads an environment variable as a plain number, or returns `default`.
pub fn env_u64(name: &str, default: u64) -> BenchResult<u64> {
    let Ok(text) = std::env::var(name) else {
        return Ok(default);
    };
    text.trim()
        .parse()
        .map_err(|_| format!("{name}={text:?} is not a number").into())
}

fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, shift) = match text.char_indices().last()? {
        (at, 'k' | 'K') => (&text[..at], 10),
        (at, 'm' | 'M') => (&text[..at], 20),
        (at, 'g' | 'G') => (&text[..at], 30),
        _ => (text, 0),
    };
    digits.trim().parse::<u64>().ok()?.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("4096"), Some(4096));
        assert_eq!(parse_bytes("512M"), Some(512 << 20));
        assert_eq!(parse_bytes("4g"), Some(4 << 30));
        assert_eq!(parse_bytes("x"), None);
        assert_eq!(parse_bytes(""), None);
    }

    #[test]
    fn payloads_are_letters_and_differ_by_seed() {
        let first = payload(1001, 1);
        assert!(first.iter().all(|byte| (b'a'..=b'p').contains(byte)));
        assert_ne!(first, payload(1001, 2));
        assert_eq!(first, payload(1001, 1));
    }

    #[test]
    fn touch_sums_every_byte() {
        assert_eq!(touch(&[1, 0, 0, 0, 0, 0, 0, 0, 2]), 3);
        assert_eq!(touch(&[]), 0);
    }

    #[test]
    fn extrapolates_cut_runs() {
        let measured = Measured {
            operations: 50,
            elapsed: Duration::from_secs(1),
            ..Measured::default()
        };
        assert_eq!(measured.elapsed_for(100), Duration::from_secs(2));
        assert_eq!(measured.elapsed_for(50), Duration::from_secs(1));
    }
}
