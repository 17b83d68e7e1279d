//! The version guard: HealthLake should end up with the latest version of every resource, and
//! nothing for deleted ones, whatever order Smile CDR's deliveries arrive in.
//!
//! For each resource the relay remembers the `meta.lastUpdated` (and `meta.versionId`) of the
//! last write HealthLake accepted, or a tombstone after a DELETE. A write older than that is
//! answered `stale-version` and not forwarded; an equal one (a retry) is forwarded again, since
//! the earlier attempt may have failed.
//!
//! The memory lives in Envoy's shared data (one process, all workers) and is bounded: entries are
//! spread over [`Limits::shards`] shard values by a fingerprint of `Type/id` (about
//! [`ENTRIES_PER_SHARD`] each, at most [`MAX_SHARDS`] values), each shard keeps at most
//! [`Limits::per_shard`] entries (the least recently recorded go first) and drops entries older
//! than `max_age_seconds`. Shared data has no way to delete keys, so a fixed set of shard keys is
//! what keeps it bounded. Small shards keep the per-request cost low: every write copies its
//! shard out of shared data once to check it and back once to record it. The guard is per Envoy
//! process: a restart forgets.

use crate::instant::Nanos;
use crate::resource::Version;
use sha2::{Digest, Sha256};

/// Entries a shard holds when the guard is full: small, since each write copies its shard.
pub const ENTRIES_PER_SHARD: usize = 16;

/// Most shard values (shared-data keys) the guard uses.
pub const MAX_SHARDS: usize = 65_536;

const FORMAT: u8 = 1;
const ENTRY_LEN: usize = 16 + 16 + 8 + 1 + 8;
const NONE_TIME: i128 = i128::MIN;
const NONE_VERSION: u64 = u64::MAX;

/// A resource's identity in the guard: SHA-256 of `Type/id`, first 16 bytes.
pub type Fingerprint = [u8; 16];

/// The bounds of the guard's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_entries: usize,
    pub max_age_seconds: u64,
    /// How far past the relay's clock a `meta.lastUpdated` is still believed (clock skew between
    /// Smile CDR and the relay). A later one is never the reason to hold a write back.
    pub clock_skew_seconds: u64,
}

impl Limits {
    /// Whether an entry is still remembered at `now`: recorded at most `max_age_seconds` ago.
    pub fn young(&self, entry: &Entry, now: u64) -> bool {
        now.saturating_sub(entry.recorded_at) <= self.max_age_seconds
    }

    /// Whether a `lastUpdated` can be trusted at `now` (Unix seconds): not beyond now plus the
    /// clock-skew allowance.
    pub fn trusts(&self, time: Nanos, now: u64) -> bool {
        let latest = i128::from(now).saturating_add(i128::from(self.clock_skew_seconds));
        time <= latest.saturating_mul(1_000_000_000)
    }

    /// How many shard values the entries are spread over.
    pub fn shards(&self) -> usize {
        self.max_entries
            .div_ceil(ENTRIES_PER_SHARD)
            .clamp(1, MAX_SHARDS)
    }

    /// Most entries one shard keeps.
    pub fn per_shard(&self) -> usize {
        self.max_entries.div_ceil(self.shards()).max(1)
    }
}

/// What the guard knows of one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub fingerprint: Fingerprint,
    /// `meta.lastUpdated` of the last accepted write (or of the deletion, for a tombstone).
    pub last_updated: Option<Nanos>,
    /// Numeric `meta.versionId` of the last accepted write.
    pub version: Option<u64>,
    pub deleted: bool,
    /// When the relay recorded it (Unix seconds), for eviction.
    pub recorded_at: u64,
}

/// Where a resource's entry lives: the shared-data key of its shard, and its fingerprint.
pub fn locate(resource_type: &str, id: &str, limits: Limits) -> (String, Fingerprint) {
    let digest = Sha256::new()
        .chain_update(resource_type.as_bytes())
        .chain_update(b"/")
        .chain_update(id.as_bytes())
        .finalize();
    let mut fingerprint = [0u8; 16];
    for (dst, src) in fingerprint.iter_mut().zip(digest.iter()) {
        *dst = *src;
    }
    let mut head = [0u8; 8];
    for (dst, src) in head.iter_mut().zip(fingerprint.iter()) {
        *dst = *src;
    }
    let shards = limits.shards() as u64;
    let shard = u64::from_le_bytes(head) % shards;
    // The shard count is part of the key: a different max_entries starts a fresh layout.
    (
        format!("healthlake_relay.versions.{shards}.{shard}"),
        fingerprint,
    )
}

/// What the guard knows of `fingerprint` in an encoded shard, read without decoding the rest.
pub fn find(shard: Option<&[u8]>, fingerprint: &Fingerprint) -> Option<Entry> {
    let (&format, body) = shard?.split_first()?;
    if format != FORMAT || body.len() % ENTRY_LEN != 0 {
        return None;
    }
    body.chunks_exact(ENTRY_LEN)
        .find(|chunk| chunk.get(..16) == Some(fingerprint.as_slice()))
        .and_then(decode_entry)
}

/// The guard's verdict on a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Forward,
    /// Older than what HealthLake has (or than its deletion): not forwarded.
    Stale,
    /// Its `lastUpdated` lies beyond the relay's clock plus the skew allowance: forwarded (it is
    /// Smile CDR's data, and refusing it would lose it) but not recorded, so that a timestamp the
    /// relay has no reason to trust never holds a later write back.
    Unrecorded,
}

fn numeric_version(v: &Version) -> Option<u64> {
    v.version_id.as_deref().and_then(|s| s.parse().ok())
}

/// The guard's verdict on an incoming write at `now` (Unix seconds). What it knows with an
/// untrusted `lastUpdated` (recorded before the allowance existed, or by a relay whose clock was
/// behind), or recorded longer than `max_age_seconds` ago, counts as nothing known.
pub fn check(known: Option<&Entry>, incoming: &Version, now: u64, limits: Limits) -> Decision {
    if incoming
        .last_updated
        .is_some_and(|t| !limits.trusts(t, now))
    {
        return Decision::Unrecorded;
    }
    let known = known
        .filter(|k| limits.young(k, now))
        .filter(|k| k.last_updated.is_none_or(|t| limits.trusts(t, now)));
    order(known, incoming)
}

/// Compares an incoming write with what the guard knows.
fn order(known: Option<&Entry>, incoming: &Version) -> Decision {
    let (Some(known), Some(incoming_time)) = (known, incoming.last_updated) else {
        return Decision::Forward;
    };
    let Some(known_time) = known.last_updated else {
        return Decision::Forward;
    };
    if incoming_time != known_time {
        return if incoming_time < known_time {
            Decision::Stale
        } else {
            Decision::Forward
        };
    }
    // Same instant: the deleted version itself must not come back; otherwise compare versions.
    if known.deleted {
        return Decision::Stale;
    }
    match (numeric_version(incoming), known.version) {
        (Some(i), Some(k)) if i < k => Decision::Stale,
        _ => Decision::Forward,
    }
}

/// One shard's entries, decoded from (and encoded to) its shared-data value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shard {
    entries: Vec<Entry>,
}

impl Shard {
    /// Decodes a shard value; an absent or unreadable value is an empty shard.
    pub fn decode(bytes: Option<&[u8]>) -> Shard {
        let Some(bytes) = bytes else {
            return Shard::default();
        };
        let Some((&FORMAT, body)) = bytes.split_first() else {
            return Shard::default();
        };
        if body.len() % ENTRY_LEN != 0 {
            return Shard::default();
        }
        let entries = body
            .chunks_exact(ENTRY_LEN)
            .filter_map(decode_entry)
            .collect();
        Shard { entries }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.entries.len() * ENTRY_LEN);
        out.push(FORMAT);
        for e in &self.entries {
            out.extend_from_slice(&e.fingerprint);
            out.extend_from_slice(&e.last_updated.unwrap_or(NONE_TIME).to_le_bytes());
            out.extend_from_slice(&e.version.unwrap_or(NONE_VERSION).to_le_bytes());
            out.push(u8::from(e.deleted));
            out.extend_from_slice(&e.recorded_at.to_le_bytes());
        }
        out
    }

    pub fn get(&self, fingerprint: &Fingerprint) -> Option<&Entry> {
        self.entries.iter().find(|e| &e.fingerprint == fingerprint)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records a write HealthLake accepted. Never lowers what is known: if a newer version was
    /// recorded meanwhile (a race between deliveries), it stays.
    pub fn record_write(
        &mut self,
        fingerprint: Fingerprint,
        v: &Version,
        now: u64,
        limits: Limits,
    ) {
        let candidate = Entry {
            fingerprint,
            last_updated: v.last_updated,
            version: numeric_version(v),
            deleted: false,
            recorded_at: now,
        };
        let known = self.position(&fingerprint);
        let known_entry = known.and_then(|at| self.entries.get(at));
        let entry = match (check(known_entry, v, now, limits), known_entry) {
            (Decision::Forward, _) | (Decision::Stale, None) => candidate,
            // A newer version was recorded meanwhile: it stays, written again now.
            (Decision::Stale, Some(known)) => Entry {
                recorded_at: known.recorded_at.max(now),
                ..*known
            },
            // A lastUpdated the guard does not trust is never recorded; nothing moves.
            (Decision::Unrecorded, _) => return,
        };
        // The entry written last goes last: eviction drops from the front.
        if let Some(at) = known {
            self.entries.remove(at);
        }
        self.entries.push(entry);
        self.evict(now, limits);
    }

    /// Where the entry of `fingerprint` is, if any.
    fn position(&self, fingerprint: &Fingerprint) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.fingerprint == *fingerprint)
    }

    /// Records a deletion: a tombstone at the last known `lastUpdated`. A resource the relay
    /// never saw gets none: a DELETE carries no version, and the relay's own clock cannot be
    /// compared with Smile CDR's `lastUpdated` (a backfill re-delivers re-created resources with
    /// past times, which a clock-based tombstone would wrongly call stale: data lost).
    pub fn record_delete(&mut self, fingerprint: Fingerprint, now: u64, limits: Limits) {
        // Only a version the guard still knows (young, with a lastUpdated) becomes a tombstone.
        let known = self.position(&fingerprint).filter(|&at| {
            self.entries
                .get(at)
                .is_some_and(|e| limits.young(e, now) && e.last_updated.is_some())
        });
        if let Some(at) = known {
            let mut e = self.entries.remove(at);
            e.deleted = true;
            e.recorded_at = e.recorded_at.max(now);
            self.entries.push(e);
        }
        self.evict(now, limits);
    }

    /// Drops entries older than the maximum age, then the least recently written beyond the
    /// shard's capacity. `recorded_at` has a resolution of one second, so within a second the
    /// order of the entries decides: the one written last is last (a stable sort keeps it so).
    fn evict(&mut self, now: u64, limits: Limits) {
        self.entries.retain(|e| limits.young(e, now));
        let cap = limits.per_shard();
        if self.entries.len() > cap {
            self.entries.sort_by_key(|e| e.recorded_at);
            let excess = self.entries.len() - cap;
            self.entries.drain(..excess);
        }
    }
}

fn decode_entry(chunk: &[u8]) -> Option<Entry> {
    let fingerprint: Fingerprint = chunk.get(0..16)?.try_into().ok()?;
    let time = i128::from_le_bytes(chunk.get(16..32)?.try_into().ok()?);
    let version = u64::from_le_bytes(chunk.get(32..40)?.try_into().ok()?);
    let deleted = *chunk.get(40)? != 0;
    let recorded_at = u64::from_le_bytes(chunk.get(41..49)?.try_into().ok()?);
    Some(Entry {
        fingerprint,
        last_updated: (time != NONE_TIME).then_some(time),
        version: (version != NONE_VERSION).then_some(version),
        deleted,
        recorded_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instant;

    const LIMITS: Limits = Limits {
        max_entries: 100_000,
        max_age_seconds: 3600,
        clock_skew_seconds: 300,
    };

    /// The relay's clock in these tests: 2026-03-01T00:00:00Z (after every lastUpdated used).
    const T0: u64 = 1_772_323_200;

    fn decide(known: Option<&Entry>, incoming: &Version) -> Decision {
        check(known, incoming, T0 + 10, LIMITS)
    }

    fn v(time: &str, version: &str) -> Version {
        Version {
            last_updated: Some(instant::parse(time).unwrap()),
            version_id: Some(version.to_owned()),
        }
    }

    fn fp(n: u8) -> Fingerprint {
        [n; 16]
    }

    #[test]
    fn locate_is_stable_and_spreads() {
        let (k1, f1) = locate("Patient", "a", LIMITS);
        assert_eq!(locate("Patient", "a", LIMITS), (k1.clone(), f1));
        assert_ne!(locate("Patient", "b", LIMITS).1, f1);
        assert_ne!(
            locate("Patien", "ta", LIMITS).1,
            locate("Patient", "a", LIMITS).1
        );
        assert!(k1.starts_with("healthlake_relay.versions.6250."), "{k1}");
        // 100,000 entries: 6,250 shards of 16; 20,000 resources land in most of them, evenly.
        let mut per_shard = std::collections::HashMap::new();
        for i in 0..20_000 {
            *per_shard
                .entry(locate("Observation", &i.to_string(), LIMITS).0)
                .or_insert(0) += 1;
        }
        assert!(per_shard.len() > 5_500, "{}", per_shard.len());
        assert!(per_shard.values().all(|&n| n < 16), "{per_shard:?}");
    }

    #[test]
    fn shard_count_follows_max_entries() {
        let limits = |max_entries| Limits {
            max_entries,
            max_age_seconds: 1,
            clock_skew_seconds: 300,
        };
        assert_eq!((LIMITS.shards(), LIMITS.per_shard()), (6_250, 16));
        assert_eq!((limits(1).shards(), limits(1).per_shard()), (1, 1));
        assert_eq!((limits(40).shards(), limits(40).per_shard()), (3, 14));
        // At the top the shards grow instead: 10,000,000 over 65,536 values.
        assert_eq!(limits(10_000_000).shards(), MAX_SHARDS);
        assert_eq!(limits(10_000_000).per_shard(), 153);
        for max in [1, 15, 16, 17, 1000, 99_999, 100_000, 3_000_000] {
            let l = limits(max);
            assert!(l.shards() * l.per_shard() >= max, "{max}");
            assert!(l.shards() * l.per_shard() < max + l.shards(), "{max}");
        }
    }

    #[test]
    fn find_reads_one_entry_of_an_encoded_shard() {
        let mut s = Shard::default();
        for n in 1..=5 {
            s.record_write(fp(n), &v("2026-01-02T00:00:00Z", "1"), T0 + 10, LIMITS);
        }
        s.record_delete(fp(3), T0 + 11, LIMITS);
        let bytes = s.encode();
        for n in 1..=5 {
            assert_eq!(find(Some(&bytes), &fp(n)).as_ref(), s.get(&fp(n)));
        }
        assert!(find(Some(&bytes), &fp(3)).unwrap().deleted);
        assert_eq!(find(Some(&bytes), &fp(9)), None);
        assert_eq!(find(None, &fp(1)), None);
        assert_eq!(find(Some(&bytes[..bytes.len() - 1]), &fp(1)), None);
        assert_eq!(find(Some(&[9, 1, 2]), &fp(1)), None);
    }

    #[test]
    fn newer_and_equal_versions_pass_older_are_stale() {
        let mut s = Shard::default();
        s.record_write(fp(1), &v("2026-01-02T00:00:00Z", "2"), T0 + 10, LIMITS);
        let known = s.get(&fp(1));
        assert_eq!(
            decide(known, &v("2026-01-03T00:00:00Z", "3")),
            Decision::Forward
        );
        assert_eq!(
            decide(known, &v("2026-01-02T00:00:00Z", "2")),
            Decision::Forward
        );
        assert_eq!(
            decide(known, &v("2026-01-01T00:00:00Z", "1")),
            Decision::Stale
        );
        // Same instant, lower version: stale; higher: forward.
        assert_eq!(
            decide(known, &v("2026-01-02T00:00:00Z", "1")),
            Decision::Stale
        );
        assert_eq!(
            decide(known, &v("2026-01-02T00:00:00Z", "5")),
            Decision::Forward
        );
        // Unknown resources and writes without lastUpdated always pass.
        assert_eq!(
            decide(None, &v("2000-01-01T00:00:00Z", "1")),
            Decision::Forward
        );
        let no_time = Version {
            last_updated: None,
            version_id: None,
        };
        assert_eq!(decide(known, &no_time), Decision::Forward);
    }

    #[test]
    fn a_lastupdated_beyond_the_clock_is_forwarded_and_never_holds_anything_back() {
        let now = T0 + 10;
        let at = |secs: u64| Version {
            last_updated: Some(i128::from(secs) * 1_000_000_000),
            version_id: Some("1".to_owned()),
        };
        // Within the allowance: trusted as usual.
        assert!(LIMITS.trusts(i128::from(now + 300) * 1_000_000_000, now));
        assert!(!LIMITS.trusts(i128::from(now + 301) * 1_000_000_000, now));
        let mut s = Shard::default();
        assert_eq!(
            check(None, &at(now + 301), now, LIMITS),
            Decision::Unrecorded
        );
        // Recording it (the glue does not) would change nothing.
        s.record_write(fp(1), &at(now - 60), now, LIMITS);
        s.record_write(fp(1), &at(u64::MAX / 2_000_000_000), now, LIMITS);
        assert_eq!(
            s.get(&fp(1)).unwrap().last_updated,
            at(now - 60).last_updated
        );
        // An entry already poisoned (9999-12-31, recorded before the allowance existed) counts as
        // nothing known: later writes and re-creations pass, and replace it.
        let far = v("9999-12-31T23:59:59Z", "9");
        let poisoned = Entry {
            fingerprint: fp(2),
            last_updated: far.last_updated,
            version: Some(9),
            deleted: true,
            recorded_at: now,
        };
        assert_eq!(
            check(Some(&poisoned), &at(now), now, LIMITS),
            Decision::Forward
        );
        let mut p = Shard::decode(Some(&{
            let mut one = Shard::default();
            one.entries.push(poisoned);
            one.encode()
        }));
        p.record_write(fp(2), &at(now), now, LIMITS);
        assert_eq!(p.get(&fp(2)).unwrap().last_updated, at(now).last_updated);
        assert!(!p.get(&fp(2)).unwrap().deleted);
    }

    #[test]
    fn recording_never_lowers_the_known_version() {
        let mut s = Shard::default();
        s.record_write(fp(1), &v("2026-01-03T00:00:00Z", "3"), T0 + 10, LIMITS);
        s.record_write(fp(1), &v("2026-01-02T00:00:00Z", "2"), T0 + 11, LIMITS);
        assert_eq!(s.get(&fp(1)).unwrap().version, Some(3));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn tombstones_stop_resurrection_but_not_recreation() {
        let mut s = Shard::default();
        s.record_write(fp(1), &v("2026-01-02T00:00:00Z", "2"), T0 + 10, LIMITS);
        s.record_delete(fp(1), T0 + 11, LIMITS);
        let known = s.get(&fp(1));
        assert!(known.unwrap().deleted);
        assert_eq!(
            decide(known, &v("2026-01-01T00:00:00Z", "1")),
            Decision::Stale
        );
        assert_eq!(
            decide(known, &v("2026-01-02T00:00:00Z", "2")),
            Decision::Stale
        );
        assert_eq!(
            decide(known, &v("2026-01-05T00:00:00Z", "4")),
            Decision::Forward
        );
        s.record_write(fp(1), &v("2026-01-05T00:00:00Z", "4"), T0 + 12, LIMITS);
        assert!(!s.get(&fp(1)).unwrap().deleted);

        // Deleting a resource never seen leaves nothing: any later write of it is forwarded,
        // whatever its lastUpdated (a re-created resource re-delivered by a backfill).
        s.record_delete(fp(2), T0 + 13, LIMITS);
        assert!(s.get(&fp(2)).is_none());
        assert_eq!(
            decide(s.get(&fp(2)), &v("2000-01-31T00:00:00Z", "7")),
            Decision::Forward
        );
    }

    #[test]
    fn encoding_round_trips_and_garbage_is_empty() {
        let mut s = Shard::default();
        s.record_write(
            fp(1),
            &v("2026-01-02T00:00:00.123456789Z", "2"),
            T0 + 10,
            LIMITS,
        );
        s.record_write(
            fp(2),
            &Version {
                last_updated: None,
                version_id: Some("x".into()),
            },
            11,
            LIMITS,
        );
        s.record_write(fp(3), &v("2026-01-01T00:00:00Z", "1"), T0 + 12, LIMITS);
        s.record_delete(fp(3), T0 + 12, LIMITS);
        let bytes = s.encode();
        assert_eq!(Shard::decode(Some(&bytes)), s);
        assert!(Shard::decode(None).is_empty());
        assert!(Shard::decode(Some(b"")).is_empty());
        assert!(Shard::decode(Some(&bytes[..bytes.len() - 1])).is_empty());
        assert!(Shard::decode(Some(&[9, 1, 2])).is_empty());
    }

    #[test]
    fn shard_keys_stay_within_the_shard_count() {
        for limits in [
            LIMITS,
            Limits {
                max_entries: 40,
                ..LIMITS
            },
            Limits {
                max_entries: 1,
                ..LIMITS
            },
        ] {
            let shards = limits.shards();
            let prefix = format!("healthlake_relay.versions.{shards}.");
            let mut seen = std::collections::HashSet::new();
            for i in 0..2_000 {
                let (key, _) = locate("Patient", &format!("p{i}"), limits);
                let shard: usize = key.strip_prefix(&prefix).unwrap().parse().unwrap();
                assert!(shard < shards, "{key}");
                seen.insert(shard);
            }
            // Spread over the shards, not a few of them.
            assert!(seen.len() >= shards.min(1_500), "{shards}: {}", seen.len());
        }
    }

    #[test]
    fn an_encoded_entry_is_49_bytes() {
        let mut s = Shard::default();
        assert!(s.is_empty());
        s.record_write(fp(1), &v("2026-01-02T00:00:00Z", "2"), T0, LIMITS);
        assert!(!s.is_empty());
        let bytes = s.encode();
        // Format byte, then fingerprint 16, lastUpdated 16, version 8, deleted 1, recorded 8.
        assert_eq!(bytes.len(), 1 + 49);
        assert_eq!(bytes[0], 1);
        assert_eq!(&bytes[1..17], &[1; 16]);
        assert_eq!(bytes[41], 0);
        assert_eq!(&bytes[42..50], &T0.to_le_bytes());
    }

    #[test]
    fn a_one_entry_guard_keeps_the_latest_write() {
        let one = Limits {
            max_entries: 1,
            max_age_seconds: 3600,
            clock_skew_seconds: 300,
        };
        let mut s = Shard::default();
        s.record_write(fp(1), &v("2026-01-02T00:00:00Z", "1"), T0, one);
        s.record_write(fp(2), &v("2026-01-02T00:00:00Z", "1"), T0 + 1, one);
        assert_eq!(s.len(), 1);
        assert!(s.get(&fp(2)).is_some());
        s.record_delete(fp(2), T0 + 2, one);
        assert!(s.get(&fp(2)).unwrap().deleted);
    }

    #[test]
    fn memory_is_bounded_by_entries_and_age() {
        // Three entries: one shard of three.
        let limits = Limits {
            max_entries: 3,
            max_age_seconds: 100,
            clock_skew_seconds: 300,
        };
        let mut s = Shard::default();
        for n in 0..10u8 {
            s.record_write(
                fp(n),
                &v("2026-01-02T00:00:00Z", "1"),
                T0 + u64::from(n),
                limits,
            );
        }
        assert_eq!(s.len(), 3);
        // The most recently recorded stay.
        assert!(s.get(&fp(9)).is_some() && s.get(&fp(7)).is_some() && s.get(&fp(0)).is_none());
        s.record_write(fp(20), &v("2026-01-02T00:00:00Z", "1"), T0 + 500, limits);
        assert_eq!(s.len(), 1);
    }
}

#[cfg(test)]
mod eviction_order {
    use super::*;
    use crate::instant;

    fn version(time: &str) -> Version {
        Version {
            last_updated: instant::parse(time),
            version_id: Some("1".to_owned()),
        }
    }

    fn fingerprint(n: u8) -> Fingerprint {
        [n; 16]
    }

    fn limits(max_entries: usize, max_age_seconds: u64) -> Limits {
        Limits {
            max_entries,
            max_age_seconds,
            clock_skew_seconds: 300,
        }
    }

    /// 2026-03-01T00:00:00Z, after every lastUpdated used.
    const NOW: u64 = 1_772_323_200;

    /// Records a write of resource `n` at `time` (its lastUpdated), `now` seconds.
    fn write(shard: &mut Shard, n: u8, time: &str, now: u64, limits: Limits) {
        shard.record_write(fingerprint(n), &version(time), now, limits);
    }

    /// Within one second (`recorded_at` ties), a full shard forgets the entry written first,
    /// never the one just written.
    #[test]
    fn a_full_shard_forgets_the_least_recently_written_even_within_a_second() {
        let limits = limits(4, 3600);
        let now = NOW;
        let v = version("2026-01-02T10:00:00Z");
        let mut shard = Shard::decode(None);
        for n in 0..6 {
            shard.record_write(fingerprint(n), &v, now, limits);
        }
        let kept: Vec<bool> = (0..6)
            .map(|n| shard.get(&fingerprint(n)).is_some())
            .collect();
        assert_eq!(kept, [false, false, true, true, true, true]);
        // Writing an entry again (a retry) makes it the most recent: 3 is forgotten next, not 2.
        shard.record_write(fingerprint(2), &v, now, limits);
        shard.record_write(fingerprint(6), &v, now, limits);
        let kept: Vec<bool> = (2..7)
            .map(|n| shard.get(&fingerprint(n)).is_some())
            .collect();
        assert_eq!(kept, [true, false, true, true, true]);
        // The order survives encoding: it is what the next worker reads.
        let again = Shard::decode(Some(&shard.encode()));
        assert_eq!(again.encode(), shard.encode());
    }

    /// A DELETE of a resource whose entry has aged out leaves no tombstone (the guard no longer
    /// knows its version); an unrecorded write moves nothing.
    #[test]
    fn an_aged_entry_is_not_revived_as_a_tombstone_and_unrecorded_writes_move_nothing() {
        let limits = limits(100, 60);
        let now = NOW;
        let mut shard = Shard::decode(None);
        write(&mut shard, 1, "2026-01-02T10:00:00Z", now, limits);
        write(&mut shard, 2, "2026-01-02T10:00:00Z", now, limits);
        write(&mut shard, 2, "2026-01-02T10:00:00Z", now + 30, limits);
        shard.record_delete(fingerprint(1), now + 61, limits);
        assert!(shard.get(&fingerprint(1)).is_none());
        assert!(shard.get(&fingerprint(2)).is_some());
        let before = shard.encode();
        // lastUpdated beyond the clock-skew allowance: forwarded, never recorded, known or not.
        for n in [2, 3] {
            write(&mut shard, n, "2099-01-01T00:00:00Z", now + 62, limits);
            assert_eq!(shard.encode(), before);
        }
    }

    /// An entry older than `max_age_seconds` is nothing known, even before a write to its
    /// shard drops it.
    #[test]
    fn an_entry_past_the_maximum_age_is_forgotten_when_read() {
        let limits = limits(100, 60);
        let now = NOW;
        let mut shard = Shard::decode(None);
        write(&mut shard, 1, "2026-01-02T10:00:00Z", now, limits);
        let known = find(Some(&shard.encode()), &fingerprint(1));
        let older = version("2026-01-01T10:00:00Z");
        assert_eq!(
            check(known.as_ref(), &older, now + 60, limits),
            Decision::Stale
        );
        assert_eq!(
            check(known.as_ref(), &older, now + 61, limits),
            Decision::Forward
        );
    }
}
