//! Per-tenant limits, so that one tenant cannot take what every tenant
//! shares. Over a limit, a call is RESOURCE_EXHAUSTED and nothing is
//! written.
//!
//! The write rate is a token bucket per tenant, kept by the node that
//! takes the write (in memory: a restart refills it).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use tonic::Status;

/// Writes a tenant may make per second, sustained, by default.
pub const WRITES_PER_SECOND_DEFAULT: u64 = 50_000;
/// Command bytes a tenant may write per second, sustained, by default.
pub const WRITE_BYTES_PER_SECOND_DEFAULT: u64 = 64 << 20;
/// A bucket holds this many seconds of its rate (the burst allowed).
pub const BURST_SECONDS: u64 = 2;
/// Most tenants tracked; past this, the least recently seen is dropped
/// (it starts again with a full bucket).
pub const TENANTS_TRACKED_MAX: usize = 65_536;

/// The limits, per tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaSettings {
    /// 0 turns the limit off.
    pub writes_per_second: u64,
    /// 0 turns the limit off.
    pub write_bytes_per_second: u64,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        Self {
            writes_per_second: WRITES_PER_SECOND_DEFAULT,
            write_bytes_per_second: WRITE_BYTES_PER_SECOND_DEFAULT,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    writes: f64,
    bytes: f64,
    at: Instant,
}

/// The buckets of every tenant.
pub struct Quotas {
    settings: QuotaSettings,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Quotas {
    pub fn new(settings: QuotaSettings) -> Self {
        Self {
            settings,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one write of `bytes` from `tenant`'s bucket, or refuses it
    /// with RESOURCE_EXHAUSTED.
    pub fn admit(&self, tenant: &str, bytes: u64) -> Result<(), Status> {
        self.admit_at(tenant, bytes, Instant::now())
    }

    fn admit_at(&self, tenant: &str, bytes: u64, now: Instant) -> Result<(), Status> {
        let QuotaSettings {
            writes_per_second,
            write_bytes_per_second,
        } = self.settings;
        let capacity = |rate: u64| (rate * BURST_SECONDS) as f64;
        let mut buckets = self.buckets.lock().unwrap_or_else(|poison| poison.into_inner());
        if !buckets.contains_key(tenant) && buckets.len() >= TENANTS_TRACKED_MAX {
            if let Some(oldest) = buckets
                .iter()
                .min_by_key(|(_, bucket)| bucket.at)
                .map(|(name, _)| name.clone())
            {
                buckets.remove(&oldest);
            }
        }
        let bucket = buckets.entry(tenant.to_string()).or_insert(Bucket {
            writes: capacity(writes_per_second),
            bytes: capacity(write_bytes_per_second),
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.at = now;
        bucket.writes = (bucket.writes + elapsed * writes_per_second as f64).min(capacity(writes_per_second));
        bucket.bytes = (bucket.bytes + elapsed * write_bytes_per_second as f64).min(capacity(write_bytes_per_second));
        let writes_ok = writes_per_second == 0 || bucket.writes >= 1.0;
        // A write larger than the whole bucket passes when the bucket is
        // full, so that no single legal write is refused forever.
        let bytes_ok = write_bytes_per_second == 0
            || bucket.bytes >= bytes as f64
            || bucket.bytes >= capacity(write_bytes_per_second);
        if !(writes_ok && bytes_ok) {
            return Err(Status::resource_exhausted(format!(
                "tenant {tenant:?} is over its write quota ({writes_per_second} writes/s, {write_bytes_per_second} bytes/s); retry later"
            )));
        }
        bucket.writes -= 1.0;
        bucket.bytes -= bytes as f64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_tenant_over_its_rate_is_refused_and_others_are_not() {
        let quotas = Quotas::new(QuotaSettings {
            writes_per_second: 10,
            write_bytes_per_second: 0,
        });
        let start = Instant::now();
        for _ in 0..10 * BURST_SECONDS {
            quotas.admit_at("a", 1, start).unwrap();
        }
        let refused = quotas.admit_at("a", 1, start).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        quotas.admit_at("b", 1, start).unwrap();
        // A tenth of a second refills one write.
        quotas.admit_at("a", 1, start + Duration::from_millis(100)).unwrap();
        assert!(quotas.admit_at("a", 1, start + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn byte_rate_counts_bytes() {
        let quotas = Quotas::new(QuotaSettings {
            writes_per_second: 0,
            write_bytes_per_second: 1000,
        });
        let start = Instant::now();
        quotas.admit_at("a", 1500, start).unwrap();
        quotas.admit_at("a", 500, start).unwrap();
        assert!(quotas.admit_at("a", 1, start).is_err());
    }
}
