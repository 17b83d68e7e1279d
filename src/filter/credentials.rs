//! The credentials a worker signs with, and (with `assume_role`) keeping them fresh.
//!
//! Every worker keeps a cache of the credentials published in shared data, refreshed on a timer
//! tick. When a refresh is due, the first worker to take the refresh lock (compare-and-swap)
//! calls STS AssumeRole through the STS cluster and publishes the answer for all; the others keep
//! signing with the still-valid credentials meanwhile. Writes that arrive before any credentials
//! exist wait (see `waiters`), for `first_fetch_wait_ms` at most.

use super::abi::{Buffer, Map};
use super::host;
use super::metrics::Metrics;
use crate::credentials::{Credentials, Unavailable};
use crate::refresh::{self, unix_ms, Published, RefreshState, CREDENTIALS_KEY, STATE_KEY};
use crate::sts::{self, AssumeRole};
use proxy_wasm::hostcalls;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

/// Where the credentials come from.
pub enum Source {
    /// The environment's (`AWS_ACCESS_KEY_ID`, ...), used as they are.
    Environment(Result<Rc<Credentials>, Unavailable>),
    /// Temporary credentials of a role, obtained with the environment's as base credentials.
    Role {
        base: Result<Credentials, Unavailable>,
        role: AssumeRole,
    },
}

/// What a request can sign with now.
pub enum ForSigning {
    /// These credentials, of this generation (0 for the environment's).
    Ready(Rc<Credentials>, u64),
    /// None yet, or none usable: a refresh is coming.
    Wait,
    /// None will come without an operator: the reason.
    Fail(String),
}

/// One worker's view of the credentials.
pub struct CredentialCache {
    pub source: Source,
    current: Option<(Published, Rc<Credentials>)>,
    state: RefreshState,
    /// The STS call this worker has in flight, if any.
    call: Option<u32>,
}

impl CredentialCache {
    pub fn new(source: Source) -> CredentialCache {
        CredentialCache {
            source,
            current: None,
            state: RefreshState::default(),
            call: None,
        }
    }

    pub fn role(&self) -> Option<&AssumeRole> {
        match &self.source {
            Source::Role { role, .. } => Some(role),
            Source::Environment(_) => None,
        }
    }

    /// Fails at once only when no credentials can ever come (so a request need not wait).
    pub fn hopeless(&self) -> Option<String> {
        match &self.source {
            Source::Environment(Err(e)) => Some(e.to_string()),
            Source::Role { base: Err(e), .. } => {
                Some(format!("{e} (base credentials for AssumeRole)"))
            }
            _ => None,
        }
    }

    pub fn for_signing(&self, now: SystemTime) -> ForSigning {
        match &self.source {
            Source::Environment(Ok(c)) => match c.usable_at(now) {
                Ok(()) => ForSigning::Ready(Rc::clone(c), 0),
                Err(e) => ForSigning::Fail(e.to_string()),
            },
            Source::Environment(Err(e)) => ForSigning::Fail(e.to_string()),
            Source::Role { base: Err(e), .. } => ForSigning::Fail(e.to_string()),
            Source::Role { .. } => match &self.current {
                Some((p, c)) if p.usable(self.state.force_generation, unix_ms(now)) => {
                    ForSigning::Ready(Rc::clone(c), p.generation)
                }
                _ => ForSigning::Wait,
            },
        }
    }

    /// Reads what shared data holds now into the cache.
    fn sync(&mut self) {
        let (value, _) = host::shared_data(CREDENTIALS_KEY);
        let published = value.as_deref().and_then(Published::decode);
        match (&published, &self.current) {
            (Some(p), Some((c, _))) if p.generation == c.generation => {}
            (Some(p), _) => {
                let creds = Rc::new(p.credentials());
                self.current = Some((p.clone(), creds));
            }
            (None, _) => self.current = None,
        }
        let (state, _) = host::shared_data(STATE_KEY);
        self.state = RefreshState::decode(state.as_deref());
    }

    /// The timer: sync, and start a refresh when one is due and no other worker holds the lock.
    pub fn tick(&mut self, region: &str, metrics: &Metrics) {
        let (base, role) = match &self.source {
            Source::Role { base: Ok(b), role } => (b.clone(), role.clone()),
            _ => return,
        };
        // The refresh state first, then the credentials: the worker that fetched publishes the
        // credentials before it releases the lock, so a state read as released comes with
        // credentials at least as new as that fetch (read the other way round, a worker could see
        // no credentials yet, then the lock just released, and fetch again).
        let (raw_state, cas) = host::shared_data(STATE_KEY);
        self.sync();
        let Some(now) = host::now() else { return };
        let now_ms = unix_ms(now);
        if let Some((p, _)) = &self.current {
            let left = p
                .expires_at_ms
                .map_or(0, |e| e.saturating_sub(now_ms) / 1000);
            metrics.credentials_expiry_seconds(left);
        }
        if self.call.is_some() {
            return;
        }
        let margin_ms = role.refresh_margin_seconds.saturating_mul(1000);
        let published = self.current.as_ref().map(|(p, _)| p);
        // Take the lock: only the worker whose compare-and-swap succeeds calls STS.
        let state = RefreshState::decode(raw_state.as_deref());
        if !state.due(published, now_ms, margin_ms)
            || !host::set_shared_data(STATE_KEY, &state.locked(now_ms).encode(), cas)
        {
            return;
        }
        metrics.refresh_attempted();
        let call = match sts::call(&role, region, &base, now) {
            Ok(c) => c,
            Err(e) => {
                let message = e.to_string();
                self.failed(now_ms, &message, metrics);
                return;
            }
        };
        let headers: Vec<(&str, &str)> = call
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // The SDK's call, not abi's: its dispatcher must know the token to route the answer.
        match hostcalls::dispatch_http_call(
            &role.cluster,
            headers,
            Some(&call.body),
            Vec::new(),
            Duration::from_millis(refresh::CALL_TIMEOUT_MS),
        ) {
            Ok(token) => self.call = Some(token),
            Err(status) => self.failed(
                now_ms,
                &format!(
                    "cannot call STS through cluster {:?}: {status:?}",
                    role.cluster
                ),
                metrics,
            ),
        }
    }

    /// STS answered (or the call failed): publish the credentials, or back off.
    /// Returns false when `token` is not this worker's STS call.
    pub fn on_response(&mut self, token: u32, body_size: usize, metrics: &Metrics) -> bool {
        if self.call != Some(token) {
            return false;
        }
        self.call = None;
        let now_ms = host::now().map_or(0, unix_ms);
        let status = host::status_code(
            super::abi::header(Map::HttpCallResponse, b":status")
                .ok()
                .flatten()
                .as_deref(),
        );
        let body = host::buffer(Buffer::HttpCallResponseBody, 0, body_size).unwrap_or_default();
        match sts::parse_response(status, &body) {
            Ok(creds) => match refresh::check_issued(creds.expires_at.map(unix_ms), now_ms) {
                Ok(()) => self.publish(&creds, now_ms, metrics),
                Err(why) => self.failed(now_ms, &why, metrics),
            },
            Err(e) => self.failed(now_ms, &e.to_string(), metrics),
        }
        true
    }

    fn publish(&mut self, creds: &Credentials, now_ms: u64, metrics: &Metrics) {
        let (old, _) = host::shared_data(CREDENTIALS_KEY);
        let generation = old
            .as_deref()
            .and_then(Published::decode)
            .map_or(1, |p| p.generation.saturating_add(1));
        let published = Published::new(creds, generation, now_ms);
        // This worker holds the lock: nobody else writes the credentials now.
        if !host::overwrite_shared_data(CREDENTIALS_KEY, &published.encode()) {
            self.failed(
                now_ms,
                "cannot store the credentials in shared data",
                metrics,
            );
            return;
        }
        let margin_ms = self
            .role()
            .map_or(0, |r| r.refresh_margin_seconds.saturating_mul(1000));
        let state = RefreshState::after_publishing(&published, now_ms, margin_ms);
        if state.next_attempt_ms > 0 {
            log::warn!(
                "healthlake-relay: STS issued credentials that are already within the refresh \
                 margin ({} s before expiry): using them, and asking again in {} s (the role's \
                 session duration is shorter than the margin, or the clock is off)",
                margin_ms / 1000,
                crate::refresh::EARLY_REFRESH_RETRY_MS / 1000
            );
        }
        set_state(|_| state.clone());
        metrics.refresh_succeeded();
        let expires = published.expires_at_ms.map_or(0, |e| e / 1000);
        log::info!(
            "healthlake-relay: assumed the role: credentials …{} (generation {generation}) expire at \
             {} (Unix {expires}), in {} s",
            creds.key_hint(),
            crate::refresh::rfc3339(expires),
            expires.saturating_sub(now_ms / 1000)
        );
        self.sync();
    }

    fn failed(&mut self, now_ms: u64, why: &str, metrics: &Metrics) {
        let seed = now_ms.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let next = set_state(|s| s.failed(now_ms, seed));
        metrics.refresh_failed();
        log::warn!(
            "healthlake-relay: AssumeRole failed (attempt {}): {why}; next attempt in {} ms{}",
            next.failures,
            next.next_attempt_ms.saturating_sub(now_ms),
            if self.current.is_some() {
                "; still signing with the current credentials while they are valid"
            } else {
                "; writes are answered 503 no-credentials meanwhile"
            }
        );
        self.sync();
    }

    /// HealthLake said the token of `generation` expired: refresh once, and stop using it.
    pub fn force_refresh(&mut self, generation: u64) {
        if self.role().is_none() {
            return;
        }
        let (value, _) = host::shared_data(CREDENTIALS_KEY);
        let current = value.as_deref().and_then(Published::decode);
        let (raw, cas) = host::shared_data(STATE_KEY);
        let state = RefreshState::decode(raw.as_deref());
        if let Some(forced) = state.force(generation, current.as_ref()) {
            if host::set_shared_data(STATE_KEY, &forced.encode(), cas) {
                log::warn!(
                    "healthlake-relay: HealthLake says the credentials of generation {generation} \
                     expired; refreshing them now"
                );
            }
        }
        self.sync();
    }
}

/// Updates the refresh state with compare-and-swap; returns what was stored.
fn set_state(update: impl Fn(&RefreshState) -> RefreshState) -> RefreshState {
    let mut last = RefreshState::default();
    for _ in 0..8 {
        let (raw, cas) = host::shared_data(STATE_KEY);
        let next = update(&RefreshState::decode(raw.as_deref()));
        if host::set_shared_data(STATE_KEY, &next.encode(), cas) {
            return next;
        }
        last = next;
    }
    last
}
