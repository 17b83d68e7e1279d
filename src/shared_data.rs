//! What the relay remembers across requests and workers, in Envoy's shared data: resource types
//! HealthLake does not support, and the version guard's shards. Updates use compare-and-swap, so
//! concurrent workers never lose each other's writes.

use crate::host::{Clock, SharedData};
use crate::plan::Target;
use crate::resource::Version;
use crate::unsupported_types;
use crate::versions::{self, Decision, Fingerprint, Limits, Shard};
use std::time::SystemTime;

/// Attempts of a compare-and-swap update before giving up (another worker kept winning).
const CAS_ATTEMPTS: usize = 8;

/// Unix seconds now, from the host clock (0 if unavailable).
pub fn unix_now(host: &impl Clock) -> u64 {
    host.now()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// When HealthLake said it does not support `resource_type` (Unix seconds), if that is still
/// remembered (entries live `ttl` seconds).
pub fn learned_unsupported_at(
    host: &(impl Clock + SharedData),
    resource_type: &str,
    ttl: u64,
) -> Option<u64> {
    let (value, _) = host.shared_data(&unsupported_types::shared_key(resource_type));
    value.as_ref()?;
    unsupported_types::learned_at(value.as_deref(), unix_now(host), ttl)
}

/// Records that HealthLake does not support `resource_type`, for `ttl` seconds. True for the
/// worker that recorded it first (the others, and repeats while it is active, get false). An
/// entry learned before `statement_read_at` (the CapabilityStatement in use, which lists the
/// type, is later) is recorded again: HealthLake's refusal is now the later word.
pub fn learn_unsupported(
    host: &(impl Clock + SharedData),
    resource_type: &str,
    ttl: u64,
    statement_read_at: Option<u64>,
) -> bool {
    let now = unix_now(host);
    let key = unsupported_types::shared_key(resource_type);
    let (value, cas) = host.shared_data(&key);
    let learned_at = unsupported_types::learned_at(value.as_deref(), now, ttl);
    unsupported_types::records(learned_at, statement_read_at)
        && host.set_shared_data(
            &key,
            &unsupported_types::encode(now.saturating_add(ttl)),
            cas,
        )
}

/// A version-guard shard as read to check a write: recording the write starts from it, so the
/// common case copies the shard out of shared data once and back once.
pub struct ShardRead {
    key: String,
    fingerprint: Fingerprint,
    value: Option<Vec<u8>>,
    cas: Option<u32>,
}

impl ShardRead {
    fn now(host: &impl SharedData, target: &Target, limits: Limits) -> ShardRead {
        let (key, fingerprint) = versions::locate(&target.resource_type, &target.id, limits);
        let (value, cas) = host.shared_data(&key);
        ShardRead {
            key,
            fingerprint,
            value,
            cas,
        }
    }
}

/// The version guard's verdict on a write of `target` carrying `version` at `now` (Unix seconds),
/// and the shard read.
pub fn version_decision(
    host: &impl SharedData,
    target: &Target,
    version: &Version,
    now: u64,
    limits: Limits,
) -> (Decision, ShardRead) {
    let read = ShardRead::now(host, target, limits);
    let known = versions::find(read.value.as_deref(), &read.fingerprint);
    (versions::check(known.as_ref(), version, now, limits), read)
}

/// Applies `update` to the shard in `read`, re-reading it when another worker wrote first.
fn update_shard(
    host: &impl SharedData,
    mut read: ShardRead,
    update: impl Fn(&mut Shard, Fingerprint),
) {
    for _ in 0..CAS_ATTEMPTS {
        let mut shard = Shard::decode(read.value.as_deref());
        update(&mut shard, read.fingerprint);
        if host.set_shared_data(&read.key, &shard.encode(), read.cas) {
            return;
        }
        (read.value, read.cas) = host.shared_data(&read.key);
    }
    log::warn!(
        "healthlake-relay: version guard: could not record a write to {} after {CAS_ATTEMPTS} \
         attempts (contention); a late older version of it would not be recognised as stale",
        read.key
    );
}

/// Records that HealthLake accepted `version` of the resource checked in `read`, signed at `now`
/// (Unix seconds).
pub fn record_write(
    host: &impl SharedData,
    read: ShardRead,
    version: &Version,
    now: u64,
    limits: Limits,
) {
    update_shard(host, read, |shard, fp| {
        shard.record_write(fp, version, now, limits)
    });
}

/// Records that `target` is deleted in HealthLake, signed at `now` (Unix seconds).
pub fn record_delete(host: &impl SharedData, target: &Target, now: u64, limits: Limits) {
    update_shard(host, ShardRead::now(host, target, limits), |shard, fp| {
        shard.record_delete(fp, now, limits)
    });
}
