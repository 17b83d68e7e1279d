//! Keeping temporary credentials fresh: one set per Envoy process, fetched by one worker,
//! published to all through shared data, refreshed ahead of expiry, retried with back-off.
//!
//! Pure decisions over two shared-data records: [`Published`] (the credentials every worker signs
//! with) and [`RefreshState`] (who is fetching, failures, back-off, a forced refresh).

use super::Credentials;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime};

/// Shared-data key of the published credentials.
pub const CREDENTIALS_KEY: &str = "healthlake_relay.credentials";
/// Shared-data key of the refresh coordination.
pub const STATE_KEY: &str = "healthlake_relay.credentials.refresh";

/// How long a worker may hold the refresh lock (the STS call times out well before).
pub const LOCK_MS: u64 = 15_000;
/// The STS call's timeout.
pub const CALL_TIMEOUT_MS: u64 = 10_000;
/// Credentials are not used for a request when they expire sooner than this: a signed request
/// (and Envoy's retries of it, within the route's 60 s timeout) must reach AWS before expiry.
pub const MIN_REMAINING_MS: u64 = 90_000;

/// How long after publishing credentials that are already due for a refresh the next one starts.
pub const EARLY_REFRESH_RETRY_MS: u64 = 30_000;

/// The shortest time between two fetches that succeeded.
pub const MIN_REFRESH_INTERVAL_MS: u64 = 10_000;

const BACKOFF_BASE_MS: u64 = 1_000;
const BACKOFF_CAP_MS: u64 = 60_000;

/// The credentials every worker signs with. Holds secrets: never logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// Unix milliseconds; `None` for credentials that do not expire.
    pub expires_at_ms: Option<u64>,
    /// When they were obtained (Unix ms).
    pub issued_at_ms: u64,
    /// Increases with every publication.
    pub generation: u64,
}

/// Who refreshes, and when the next attempt may start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshState {
    /// A worker is fetching until then (Unix ms).
    pub lock_until_ms: u64,
    /// Consecutive failed attempts.
    pub failures: u32,
    /// No attempt before then (Unix ms): the back-off after a failure.
    pub next_attempt_ms: u64,
    /// HealthLake said this generation's token expired: refresh now, and do not sign with it.
    pub force_generation: Option<u64>,
}

/// Whether credentials a source just handed out can be used at all: they must outlive
/// [`MIN_REMAINING_MS`]. Credentials already expired (or about to), as a broken source or a clock
/// far off could hand out, are a failed fetch, backed off like any other, never published: they
/// would only be refused at every request and fetched again at once.
pub fn check_issued(expires_at_ms: Option<u64>, now_ms: u64) -> Result<(), String> {
    match expires_at_ms {
        Some(e) if e <= now_ms.saturating_add(MIN_REMAINING_MS) => Err(format!(
            "handed out credentials that expire at {} (Unix {}), {} s from now: too soon to use \
             (the relay's clock may be wrong)",
            crate::calendar::rfc3339(e / 1000),
            e / 1000,
            i128::from(e / 1000) - i128::from(now_ms / 1000)
        )),
        _ => Ok(()),
    }
}

/// The least refresh margin, and the most a derived one takes (15 minutes, as botocore).
pub const MARGIN_MIN_MS: u64 = 120_000;
pub const MARGIN_MAX_MS: u64 = 900_000;

/// The refresh margin of credentials valid for `lifetime_ms` when none is configured: a quarter
/// of their lifetime, from 2 to 15 minutes, so that any lifetime a source hands out (STS's
/// shortest is 15 minutes) is refreshed well before expiry and used for most of its life.
pub fn derived_margin_ms(lifetime_ms: u64) -> u64 {
    (lifetime_ms / 4).clamp(MARGIN_MIN_MS, MARGIN_MAX_MS)
}

/// Unix milliseconds of a time.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Published {
    pub fn new(c: &Credentials, generation: u64, issued_at_ms: u64) -> Published {
        Published {
            access_key_id: c.access_key_id.clone(),
            secret_access_key: c.secret_access_key.clone(),
            session_token: c.session_token.clone(),
            expires_at_ms: c.expires_at.map(unix_ms),
            issued_at_ms,
            generation,
        }
    }

    pub fn credentials(&self) -> Credentials {
        Credentials {
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            session_token: self.session_token.clone(),
            expires_at: self
                .expires_at_ms
                .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<Published> {
        serde_json::from_slice(bytes).ok()
    }

    /// The refresh margin of these credentials: the configured one, or one derived from their
    /// lifetime ([`derived_margin_ms`]).
    pub fn margin_ms(&self, configured_ms: Option<u64>) -> u64 {
        configured_ms.unwrap_or_else(|| {
            derived_margin_ms(
                self.expires_at_ms
                    .map_or(u64::MAX, |e| e.saturating_sub(self.issued_at_ms)),
            )
        })
    }

    /// A spread of the refresh start, the same for every worker (it depends on the credentials),
    /// so that relays started together do not all call STS at the same moment: up to a tenth of
    /// the time the credentials are used before the margin, and at most a fifth of the margin.
    fn jitter_ms(&self, margin_ms: u64) -> u64 {
        let used = self.expires_at_ms.map_or(0, |e| {
            e.saturating_sub(self.issued_at_ms)
                .saturating_sub(margin_ms)
        });
        let spread = (used / 10).min(margin_ms / 5).max(1);
        let digest = Sha256::digest(self.access_key_id.as_bytes());
        let mut n = [0u8; 8];
        n.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
        u64::from_le_bytes(n) % spread
    }

    /// When the refresh of these credentials starts (Unix ms), or never.
    pub fn refresh_at_ms(&self, margin_ms: u64) -> Option<u64> {
        self.expires_at_ms.map(|e| {
            e.saturating_sub(margin_ms)
                .saturating_add(self.jitter_ms(margin_ms))
        })
    }

    /// Whether a request may be signed with these credentials now.
    pub fn usable(&self, state_force: Option<u64>, now_ms: u64) -> bool {
        state_force != Some(self.generation)
            && self
                .expires_at_ms
                .is_none_or(|e| e > now_ms.saturating_add(MIN_REMAINING_MS))
    }
}

impl std::fmt::Debug for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Published")
            .field("credentials", &self.credentials())
            .field("generation", &self.generation)
            .finish()
    }
}

impl RefreshState {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: Option<&[u8]>) -> RefreshState {
        bytes
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default()
    }

    /// Whether a worker should start fetching now.
    pub fn due(&self, published: Option<&Published>, now_ms: u64, margin_ms: u64) -> bool {
        if now_ms < self.lock_until_ms || now_ms < self.next_attempt_ms {
            return false;
        }
        match published {
            None => true,
            Some(p) => {
                self.force_generation == Some(p.generation)
                    || p.refresh_at_ms(margin_ms).is_some_and(|at| now_ms >= at)
            }
        }
    }

    /// The state after taking the lock.
    pub fn locked(&self, now_ms: u64) -> RefreshState {
        RefreshState {
            lock_until_ms: now_ms.saturating_add(LOCK_MS),
            ..self.clone()
        }
    }

    /// The state after a successful fetch.
    pub fn succeeded() -> RefreshState {
        RefreshState::default()
    }

    /// The state after publishing `published`. Credentials already inside the refresh margin (a
    /// lifetime shorter than the margin, or the relay's clock far ahead of STS's) would make the
    /// next refresh due at once, on every tick: it waits [`EARLY_REFRESH_RETRY_MS`] instead, while
    /// they are used. A refresh due sooner than [`MIN_REFRESH_INTERVAL_MS`] (a margin just short
    /// of the lifetime) waits that long: never more than one fetch per interval.
    pub fn after_publishing(published: &Published, now_ms: u64, margin_ms: u64) -> RefreshState {
        let at = published.refresh_at_ms(margin_ms);
        let next_attempt_ms = match at {
            Some(at) if at <= now_ms => now_ms.saturating_add(EARLY_REFRESH_RETRY_MS),
            Some(at) if at < now_ms.saturating_add(MIN_REFRESH_INTERVAL_MS) => {
                now_ms.saturating_add(MIN_REFRESH_INTERVAL_MS)
            }
            _ => 0,
        };
        RefreshState {
            next_attempt_ms,
            ..RefreshState::succeeded()
        }
    }

    /// The state after a failed fetch: back off with full jitter, `seed` picking the point.
    pub fn failed(&self, now_ms: u64, seed: u64) -> RefreshState {
        let failures = self.failures.saturating_add(1);
        RefreshState {
            lock_until_ms: 0,
            failures,
            next_attempt_ms: now_ms.saturating_add(backoff_ms(failures, seed)),
            force_generation: self.force_generation,
        }
    }

    /// The state after HealthLake refused `generation` as expired. `None` when nothing changes
    /// (already forced, or already replaced): one forced refresh, not a storm.
    pub fn force(&self, generation: u64, current: Option<&Published>) -> Option<RefreshState> {
        let current_generation = current.map(|p| p.generation)?;
        if current_generation != generation || self.force_generation == Some(generation) {
            return None;
        }
        Some(RefreshState {
            force_generation: Some(generation),
            next_attempt_ms: 0,
            ..self.clone()
        })
    }
}

/// Back-off before attempt `failures + 1`: full jitter over `min(cap, base * 2^(failures-1))`,
/// at least 200 ms.
pub fn backoff_ms(failures: u32, seed: u64) -> u64 {
    let exp = BACKOFF_BASE_MS.saturating_mul(1u64 << failures.saturating_sub(1).min(20));
    let ceiling = exp.min(BACKOFF_CAP_MS);
    (seed % ceiling.max(1)).max(200)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn published(expires_in_ms: Option<u64>, generation: u64, now: u64) -> Published {
        Published {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: "secret".into(),
            session_token: Some("token".into()),
            expires_at_ms: expires_in_ms.map(|d| now + d),
            issued_at_ms: now,
            generation,
        }
    }

    #[test]
    fn round_trips() {
        let p = published(Some(1000), 3, 5);
        assert_eq!(Published::decode(&p.encode()), Some(p.clone()));
        assert_eq!(p.credentials().expires_at.map(unix_ms), Some(1005));
        let s = RefreshState {
            lock_until_ms: 1,
            failures: 2,
            next_attempt_ms: 3,
            force_generation: Some(4),
        };
        assert_eq!(RefreshState::decode(Some(&s.encode())), s);
        assert_eq!(RefreshState::decode(Some(b"junk")), RefreshState::default());
        assert_eq!(RefreshState::decode(None), RefreshState::default());
    }

    #[test]
    fn first_fetch_is_due_at_once_and_only_one_worker_holds_the_lock() {
        let now = 1_000_000;
        let s = RefreshState::default();
        assert!(s.due(None, now, 15 * MIN));
        let locked = s.locked(now);
        assert!(!locked.due(None, now + 1, 15 * MIN));
        // A lock left by a worker that never answered expires.
        assert!(locked.due(None, now + LOCK_MS, 15 * MIN));
    }

    #[test]
    fn refresh_starts_within_the_margin_before_expiry() {
        let now = 10_000_000;
        let margin = 15 * MIN;
        let p = published(Some(60 * MIN), 1, now);
        let s = RefreshState::default();
        assert!(!s.due(Some(&p), now, margin));
        let at = p.refresh_at_ms(margin).unwrap();
        // 45 minutes of use before the margin: the spread is at most 4.5 minutes.
        assert!(
            at >= now + 45 * MIN && at < now + 45 * MIN + 270_000,
            "{}",
            at - now
        );
        assert!(!s.due(Some(&p), at - 1, margin));
        assert!(s.due(Some(&p), at, margin));
        // A short lifetime gets a short spread: 900 s credentials with an 890 s margin.
        let short = published(Some(900_000), 2, now);
        let at = short.refresh_at_ms(890_000).unwrap();
        assert!(at >= now + 10_000 && at < now + 11_000, "{}", at - now);
        // Long-lived credentials never need a refresh.
        assert!(!s.due(Some(&published(None, 1, now)), now + 1_000 * MIN, margin));
    }

    #[test]
    fn failures_back_off_with_jitter_and_success_resets() {
        let now = 5_000_000;
        let s = RefreshState::default().locked(now).failed(now, 123_456);
        assert_eq!(s.failures, 1);
        assert_eq!(s.lock_until_ms, 0);
        assert!(s.next_attempt_ms > now && s.next_attempt_ms <= now + 1_000);
        assert!(!s.due(None, now + 100.min(s.next_attempt_ms - now - 1), 1));
        assert!(s.due(None, s.next_attempt_ms, 1));
        let many = (0..12).fold(RefreshState::default(), |s, _| s.failed(now, u64::MAX - 1));
        assert!(many.next_attempt_ms - now <= BACKOFF_CAP_MS);
        assert_eq!(RefreshState::succeeded(), RefreshState::default());
        for failures in 1..30 {
            for seed in [0, 1, 999, u64::MAX] {
                let b = backoff_ms(failures, seed);
                assert!((200..=BACKOFF_CAP_MS).contains(&b), "{failures} {seed} {b}");
            }
        }
    }

    #[test]
    fn expired_token_forces_one_refresh_not_a_storm() {
        let now = 1_000_000;
        let p = published(Some(60 * MIN), 7, now);
        let s = RefreshState::default();
        assert!(p.usable(s.force_generation, now));
        let forced = s.force(7, Some(&p)).unwrap();
        assert!(!p.usable(forced.force_generation, now));
        assert!(forced.due(Some(&p), now, 15 * MIN));
        // Further 403s for the same generation change nothing.
        assert_eq!(forced.force(7, Some(&p)), None);
        // A 403 for credentials already replaced changes nothing.
        let newer = published(Some(60 * MIN), 8, now);
        assert_eq!(s.force(7, Some(&newer)), None);
        assert!(newer.usable(forced.force_generation, now));
    }

    /// The refresh start of credentials of `key`, relative to `expiry - margin`.
    fn spread_of(key: &str, lifetime_ms: u64, margin_ms: u64) -> u64 {
        let now = 1_000_000_000;
        let mut p = published(Some(lifetime_ms), 1, now);
        p.access_key_id = key.to_owned();
        p.refresh_at_ms(margin_ms).unwrap() - (now + lifetime_ms - margin_ms)
    }

    #[test]
    fn refresh_starts_are_spread_over_a_bounded_window() {
        // (lifetime, margin, window): a tenth of the time used before the margin, at most a fifth
        // of the margin.
        for (lifetime, margin, window) in [
            (60 * MIN, 15 * MIN, 180_000), // a fifth of 15 min (a tenth of 45 min is more)
            (900_000, 890_000, 1_000),     // a tenth of 10 s
            (12 * 60 * MIN, 2 * MIN, 24_000), // a fifth of 2 min
        ] {
            let spreads: Vec<u64> = (0..200)
                .map(|n| spread_of(&format!("ASIAKEY{n}"), lifetime, margin))
                .collect();
            assert!(spreads.iter().all(|&s| s < window), "{window}: {spreads:?}");
            // Spread over the whole window, not bunched at its start.
            let max = spreads.iter().max().copied().unwrap_or(0);
            assert!(max >= window / 2, "{window}: {max}");
            let distinct: std::collections::HashSet<_> = spreads.iter().collect();
            assert!(distinct.len() > 150, "{window}: {}", distinct.len());
        }
        // The same credentials always start at the same moment, on every worker.
        assert_eq!(
            spread_of("ASIAKEY1", 60 * MIN, 15 * MIN),
            spread_of("ASIAKEY1", 60 * MIN, 15 * MIN)
        );
    }

    #[test]
    fn backoff_is_full_jitter_over_a_doubling_ceiling() {
        // The seed picks a point below the ceiling: 1 s, 2 s, 4 s ... capped at 60 s.
        for (failures, ceiling) in [
            (1, 1_000),
            (2, 2_000),
            (3, 4_000),
            (6, 32_000),
            (7, 60_000),
            (30, 60_000),
        ] {
            assert_eq!(backoff_ms(failures, ceiling - 1), ceiling - 1, "{failures}");
            assert_eq!(backoff_ms(failures, ceiling + 700), 700, "{failures}");
            // Never less than 200 ms.
            assert_eq!(backoff_ms(failures, ceiling), 200, "{failures}");
            assert_eq!(backoff_ms(failures, 3 * ceiling + 199), 200, "{failures}");
        }
        let now = 5_000_000;
        let twice = RefreshState::default().failed(now, 0).failed(now, 1_999);
        assert_eq!(twice.failures, 2);
        assert_eq!(twice.next_attempt_ms, now + 1_999);
    }

    #[test]
    fn failure_and_force_keep_what_they_must() {
        let now = 2_000_000;
        let forced = RefreshState {
            lock_until_ms: now + LOCK_MS,
            failures: 3,
            next_attempt_ms: now + 9,
            force_generation: Some(4),
        };
        let after = forced.failed(now, 2_500);
        assert_eq!(
            after,
            RefreshState {
                lock_until_ms: 0,
                failures: 4,
                next_attempt_ms: now + 2_500,
                force_generation: Some(4),
            }
        );
        let locked = RefreshState {
            failures: 2,
            next_attempt_ms: 7,
            ..RefreshState::default()
        }
        .locked(now);
        assert_eq!(
            locked,
            RefreshState {
                lock_until_ms: now + 15_000,
                failures: 2,
                next_attempt_ms: 7,
                force_generation: None,
            }
        );
        // A forced refresh does not wait for a back-off, and keeps the lock and failures.
        let p = published(Some(60 * MIN), 5, now);
        let backing_off = RefreshState {
            lock_until_ms: 1,
            failures: 3,
            next_attempt_ms: now + 50_000,
            force_generation: None,
        };
        assert_eq!(
            backing_off.force(5, Some(&p)),
            Some(RefreshState {
                lock_until_ms: 1,
                failures: 3,
                next_attempt_ms: 0,
                force_generation: Some(5),
            })
        );
        assert_eq!(backing_off.force(5, None), None);
    }

    #[test]
    fn times_and_credentials_convert_to_unix_milliseconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_234_567);
        assert_eq!(unix_ms(t), 1_234_567);
        assert_eq!(unix_ms(SystemTime::UNIX_EPOCH - Duration::from_secs(1)), 0);
        let p = published(Some(9_000), 2, 1_000);
        let c = p.credentials();
        assert_eq!(c.access_key_id, "ASIAEXAMPLE");
        assert_eq!(c.secret_access_key, "secret");
        assert_eq!(c.session_token.as_deref(), Some("token"));
        assert_eq!(
            c.expires_at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(10_000))
        );
        assert_eq!(Published::new(&c, 2, 1_000), p);
        assert_eq!(Published::decode(b"{}"), None);
        let shown = format!("{p:?}");
        assert!(shown.starts_with("Published"), "{shown}");
        assert!(
            shown.contains("MPLE") && shown.contains("generation: 2"),
            "{shown}"
        );
        assert!(
            !shown.contains("\"secret\"") && !shown.contains("\"token\""),
            "{shown}"
        );
    }

    #[test]
    fn credentials_about_to_expire_are_not_used() {
        let now = 1_000_000;
        assert!(!published(Some(MIN_REMAINING_MS), 1, now).usable(None, now));
        assert!(published(Some(MIN_REMAINING_MS + 1), 1, now).usable(None, now));
        assert!(published(None, 1, now).usable(None, now));
    }
}

#[cfg(test)]
mod issued_credentials {
    use super::*;

    #[test]
    fn credentials_that_expire_within_the_minimum_are_refused_when_issued() {
        let now = 1_772_323_200_000;
        assert_eq!(check_issued(None, now), Ok(()));
        assert_eq!(check_issued(Some(now + 3_600_000), now), Ok(()));
        assert_eq!(check_issued(Some(now + MIN_REMAINING_MS + 1), now), Ok(()));
        // Exactly the minimum is what `usable` refuses too.
        let soon = check_issued(Some(now + MIN_REMAINING_MS), now).unwrap_err();
        assert!(soon.contains("90 s from now"), "{soon}");
        let past = check_issued(Some(now - 3_600_000), now).unwrap_err();
        assert!(
            past.contains("2026-02-28T23:00:00Z") && past.contains("-3600 s"),
            "{past}"
        );
    }

    #[test]
    fn credentials_inside_the_margin_are_used_but_not_refetched_every_tick() {
        let now = 1_772_323_200_000;
        let margin = 900_000;
        let published = |expires_in_ms: u64| Published {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: "s".into(),
            session_token: Some("t".into()),
            expires_at_ms: Some(now + expires_in_ms),
            issued_at_ms: now,
            generation: 2,
        };
        // 10 minutes left with a 15-minute margin: usable, due at once, so the next attempt waits.
        let short = published(600_000);
        assert!(short.usable(None, now));
        let state = RefreshState::after_publishing(&short, now, margin);
        assert_eq!(state.next_attempt_ms, now + EARLY_REFRESH_RETRY_MS);
        assert!(!state.due(Some(&short), now + 250, margin));
        assert!(state.due(Some(&short), now + EARLY_REFRESH_RETRY_MS, margin));
        // A normal hour: nothing to wait for, the refresh comes at its time.
        let hour = published(3_600_000);
        assert_eq!(
            RefreshState::after_publishing(&hour, now, margin),
            RefreshState::succeeded()
        );
        // 900 s credentials with an 899 s margin: due 1 s on, but not before 10 s.
        let quarter = published(900_000);
        let state = RefreshState::after_publishing(&quarter, now, 899_000);
        assert_eq!(state.next_attempt_ms, now + MIN_REFRESH_INTERVAL_MS);
        assert!(!state.due(Some(&quarter), now + MIN_REFRESH_INTERVAL_MS - 1, 899_000));
        assert!(state.due(Some(&quarter), now + MIN_REFRESH_INTERVAL_MS, 899_000));
        // With an 890 s margin the refresh is 10 s on (and a little more): unchanged.
        let state = RefreshState::after_publishing(&quarter, now, 890_000);
        assert_eq!(state.next_attempt_ms, 0);
    }
}
