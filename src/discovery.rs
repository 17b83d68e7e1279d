//! Discovering what HealthLake supports before the first write: the data store's
//! CapabilityStatement, fetched at start and then every `capabilities_refresh_seconds`, once per
//! Envoy process for all its workers.
//!
//! The same pattern as the credentials ([`crate::credentials::provider`]), over two shared-data
//! records: the supported set every worker reads ([`PUBLISHED_KEY`]) and who fetches when
//! ([`STATE_KEY`]). At each tick every worker reads the set; when a fetch is due, the worker whose
//! compare-and-swap takes the lock sends a signed `GET {prefix}/metadata` through the HealthLake
//! cluster. A failed or unreadable answer is retried with back-off and never blocks a write: the
//! set last read stays in use until it is twice the refresh interval old, and without one the
//! relay learns unsupported types from HealthLake's answers, as before discovery.

use crate::calendar::rfc3339;
use crate::capabilities::Supported;
use crate::config::Config;
use crate::credentials::call::{excerpt, Call};
use crate::credentials::provider::Event;
use crate::credentials::refresh::unix_ms;
use crate::credentials::Credentials;
use crate::host::{Calls, Clock, SharedData};
use crate::plan::Operation;
use crate::signing::{sign_request, SigningInput, EMPTY_SHA256, HEALTHLAKE_SERVICE};
use crate::unsupported_types::Listed;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// Shared-data key of the supported set in use.
pub const PUBLISHED_KEY: &str = "healthlake_relay.capabilities";
/// Shared-data key of the fetch coordination.
pub const STATE_KEY: &str = "healthlake_relay.capabilities.refresh";

/// The call's timeout; the lock outlives it.
pub const CALL_TIMEOUT_MS: u64 = 10_000;
/// A call whose answer never came back is given up after this long, while its worker still
/// holds the lock (so that giving up never releases another worker's).
const ABANDON_CALL_MS: u64 = CALL_TIMEOUT_MS + 5_000;
const LOCK_MS: u64 = ABANDON_CALL_MS + 5_000;
const BACKOFF_BASE_MS: u64 = 1_000;
const BACKOFF_CAP_MS: u64 = 300_000;

/// What discovery needs from its host: the clock, shared data, calls (answered to
/// [`Discovery::on_answer`]), and its stats.
pub trait Host: Clock + SharedData + Calls {
    /// Counts a read of the CapabilityStatement.
    fn count_fetch(&self, event: Event);
    /// The set this worker uses now: how many types can be updated, `None` when none is in use.
    fn capabilities_in_use(&self, update_types: Option<usize>);
}

/// The supported set as published for every worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Published {
    /// `{prefix}/metadata` of the data store it describes: a record of another data store (a
    /// configuration reloaded in the same process) is not used.
    path: String,
    generation: u64,
    fetched_at_ms: u64,
    supported: serde_json::Value,
}

/// Who fetches, and when the next fetch may start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    lock_until_ms: u64,
    failures: u32,
    next_attempt_ms: u64,
}

impl State {
    fn decode(bytes: Option<&[u8]>) -> State {
        bytes
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default()
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Whether a fetch may start at `now_ms`. Times further ahead than they can have been set
    /// (the clock stepped back) do not hold it up.
    fn due(&self, now_ms: u64, interval_ms: u64) -> bool {
        let lock_over =
            now_ms >= self.lock_until_ms || self.lock_until_ms > now_ms.saturating_add(LOCK_MS);
        let wait_over = now_ms >= self.next_attempt_ms
            || self.next_attempt_ms > now_ms.saturating_add(interval_ms.max(BACKOFF_CAP_MS));
        lock_over && wait_over
    }
}

/// The set a worker uses.
#[derive(Debug, Clone, PartialEq)]
pub struct InUse {
    pub supported: Supported,
    /// When HealthLake answered it (Unix ms).
    pub fetched_at_ms: u64,
}

/// One worker's part of discovery.
pub struct Discovery {
    /// The HealthLake cluster, `:authority`, region and `{prefix}/metadata`.
    cluster: String,
    authority: String,
    region: String,
    path: String,
    /// `capabilities_refresh_seconds` in ms; 0 when discovery is off.
    interval_ms: u64,
    in_use: Option<InUse>,
    /// The CAS token of the published record last read: unchanged, it is not decoded again.
    seen: Option<u32>,
    /// A request caught up since the last tick (see [`Discovery::catch_up`]).
    caught_up: bool,
    /// The call this worker has in flight, and when it was sent (Unix ms).
    call: Option<(u32, u64)>,
}

impl Discovery {
    pub fn new(config: &Config) -> Discovery {
        Discovery {
            cluster: config.healthlake_cluster.clone(),
            authority: config.healthlake_host.clone(),
            region: config.region.clone(),
            path: format!("{}/metadata", config.upstream_prefix),
            interval_ms: config.capabilities_refresh_seconds.saturating_mul(1000),
            in_use: None,
            seen: None,
            caught_up: false,
            call: None,
        }
    }

    /// Whether discovery runs at all (`capabilities_refresh_seconds` > 0).
    pub fn enabled(&self) -> bool {
        self.interval_ms > 0
    }

    /// The set in use, if any.
    pub fn in_use(&self) -> Option<&InUse> {
        self.in_use.as_ref()
    }

    /// Whether HealthLake's CapabilityStatement allows `op` on `resource_type`; `None` when no
    /// statement is in use (the relay then learns from HealthLake's answers).
    pub fn allows(&self, op: Operation, resource_type: &str) -> Option<bool> {
        self.listed(op, resource_type).map(|l| l.allows)
    }

    /// The same, with when the statement was read; `None` too where the statement says nothing
    /// of the write (see [`Supported::says`]).
    pub fn listed(&self, op: Operation, resource_type: &str) -> Option<Listed> {
        let s = self.in_use.as_ref()?;
        s.supported.says(op, resource_type).map(|allows| Listed {
            allows,
            read_at: s.fetched_at_ms / 1000,
        })
    }

    /// A set older than this is no longer used (refreshes kept failing).
    fn max_age_ms(&self) -> u64 {
        self.interval_ms.saturating_mul(2)
    }

    /// The stats of the set in use.
    fn report(&self, host: &impl Host) {
        host.capabilities_in_use(self.in_use.as_ref().map(|s| s.supported.update.len()));
    }

    /// For a request, when this worker uses no set yet: reads the one published since its last
    /// tick, so that every worker uses a set as soon as one worker has read it (between ticks
    /// otherwise, for up to 250 ms). At most once between two ticks: while HealthLake's
    /// statement cannot be read, requests do not pay for a shared-data read each.
    pub fn catch_up(&mut self, host: &(impl Clock + SharedData)) {
        if self.enabled() && self.in_use.is_none() && !self.caught_up {
            self.caught_up = true;
            if let Some(now) = host.now() {
                self.sync(host, unix_ms(now));
            }
        }
    }

    /// Reads the published set, and drops it when it is too old.
    fn sync(&mut self, host: &(impl Clock + SharedData), now_ms: u64) {
        let (value, cas) = host.shared_data(PUBLISHED_KEY);
        if cas.is_none() || cas != self.seen {
            self.seen = cas;
            self.in_use = value
                .as_deref()
                .and_then(|v| serde_json::from_slice::<Published>(v).ok())
                .filter(|p| p.path == self.path)
                .and_then(|p| {
                    Supported::decode(&p.supported).map(|supported| InUse {
                        supported,
                        fetched_at_ms: p.fetched_at_ms,
                    })
                });
        }
        let max_age_ms = self.max_age_ms();
        if self
            .in_use
            .as_ref()
            .is_some_and(|s| now_ms >= s.fetched_at_ms.saturating_add(max_age_ms))
        {
            self.in_use = None;
        }
    }

    /// The timer: read the set, and fetch it when due and this worker takes the lock.
    /// `credentials` are what a write would be signed with now (`None`: none yet).
    pub fn tick(&mut self, host: &impl Host, credentials: Option<&Credentials>) {
        if !self.enabled() {
            return;
        }
        self.caught_up = false;
        let Some(now) = host.now() else { return };
        let now_ms = unix_ms(now);
        let (raw_state, cas) = host.shared_data(STATE_KEY);
        self.sync(host, now_ms);
        self.report(host);
        if let Some((_, sent_ms)) = self.call {
            if now_ms.saturating_sub(sent_ms) >= ABANDON_CALL_MS {
                self.call = None;
                self.failed(host, now_ms, "no answer came back: the call is abandoned");
            }
            return;
        }
        let state = State::decode(raw_state.as_deref());
        // Without credentials there is nothing to sign with yet: not a failure.
        let Some(credentials) = credentials else {
            return;
        };
        if !state.due(now_ms, self.interval_ms) {
            return;
        }
        let locked = State {
            lock_until_ms: now_ms.saturating_add(LOCK_MS),
            ..state
        };
        if !host.set_shared_data(STATE_KEY, &locked.encode(), cas) {
            return;
        }
        host.count_fetch(Event::Attempted);
        let call = match self.signed_call(credentials, now) {
            Ok(call) => call,
            Err(why) => return self.failed(host, now_ms, &why),
        };
        match host.dispatch(&call, Duration::from_millis(CALL_TIMEOUT_MS)) {
            Ok(token) => self.call = Some((token, now_ms)),
            Err(status) => self.failed(
                host,
                now_ms,
                &format!("cannot call cluster {:?}: {status}", self.cluster),
            ),
        }
    }

    /// `GET {prefix}/metadata`, signed.
    fn signed_call(&self, credentials: &Credentials, now: SystemTime) -> Result<Call, String> {
        let input = SigningInput {
            method: "GET",
            host: &self.authority,
            path: &self.path,
            content_type: None,
            payload_sha256: EMPTY_SHA256,
            region: &self.region,
            service: HEALTHLAKE_SERVICE,
            time: now,
        };
        let headers = sign_request(&input, credentials).map_err(|e| e.to_string())?;
        let mut call = Call::new(&self.cluster, "GET", &self.authority, &self.path)
            .header("accept", "application/fhir+json");
        for (name, value) in headers {
            call = call.header(&name, &value);
        }
        Ok(call)
    }

    /// Whether `token` is the call this worker awaits.
    pub fn awaits(&self, token: u32) -> bool {
        self.call.is_some_and(|(t, _)| t == token)
    }

    /// The answer to this worker's call (status 0: no answer). False when `token` is not it.
    pub fn on_answer(&mut self, host: &impl Host, token: u32, status: u16, body: &[u8]) -> bool {
        if !self.awaits(token) {
            return false;
        }
        self.call = None;
        // Without a clock nothing can be dated: the lock runs out and a later tick asks again.
        let Some(now_ms) = host.now().map(unix_ms) else {
            return true;
        };
        let read = match status {
            200 => Supported::from_statement(body),
            0 => Err(
                "no answer (HealthLake cannot be reached, or it did not answer within 10 s)"
                    .to_owned(),
            ),
            other => Err(format!("HealthLake answered {other}: {}", excerpt(body))),
        };
        match read {
            Ok(supported) => self.publish(host, supported, now_ms),
            Err(why) => self.failed(host, now_ms, &why),
        }
        true
    }

    fn publish(&mut self, host: &impl Host, supported: Supported, now_ms: u64) {
        let (old, old_cas) = host.shared_data(PUBLISHED_KEY);
        let old: Option<Published> = old.as_deref().and_then(|v| serde_json::from_slice(v).ok());
        let published = Published {
            path: self.path.clone(),
            generation: old.as_ref().map_or(1, |p| p.generation.saturating_add(1)),
            fetched_at_ms: now_ms,
            supported: supported.encode(),
        };
        let stored = serde_json::to_vec(&published)
            .ok()
            .is_some_and(|bytes| host.set_shared_data(PUBLISHED_KEY, &bytes, old_cas));
        if !stored {
            return self.failed(
                host,
                now_ms,
                "cannot store the supported set in shared data",
            );
        }
        update_state(host, |_| State {
            lock_until_ms: 0,
            failures: 0,
            next_attempt_ms: now_ms.saturating_add(self.interval_ms),
        });
        host.count_fetch(Event::Succeeded);
        let before = old.and_then(|p| Supported::decode(&p.supported));
        log_change(before.as_ref(), &supported, self.interval_ms / 1000);
        self.sync(host, now_ms);
        self.report(host);
    }

    fn failed(&mut self, host: &impl Host, now_ms: u64, why: &str) {
        let interval = self.interval_ms;
        let state = update_state(host, |s| {
            let failures = s.failures.saturating_add(1);
            let ceiling = BACKOFF_BASE_MS
                .saturating_mul(1 << failures.saturating_sub(1).min(20))
                .min(BACKOFF_CAP_MS.min(interval).max(BACKOFF_BASE_MS));
            // Equal jitter, the same for every worker of this attempt.
            let spread = now_ms.wrapping_mul(0x9E37_79B9_7F4A_7C15) % (ceiling / 2 + 1);
            State {
                lock_until_ms: 0,
                failures,
                next_attempt_ms: now_ms.saturating_add(ceiling / 2 + spread),
            }
        });
        host.count_fetch(Event::Failed);
        self.sync(host, now_ms);
        self.report(host);
        let meanwhile = match &self.in_use {
            Some(s) => format!(
                "still using the one read at {} until it is {} s old",
                rfc3339(s.fetched_at_ms / 1000),
                self.max_age_ms() / 1000
            ),
            None => "writes are forwarded and HealthLake's 400 not-supported answers are learned \
                     meanwhile"
                .to_owned(),
        };
        log::warn!(
            "healthlake-relay: could not read HealthLake's CapabilityStatement (GET {}, attempt \
             {}): {why}; {meanwhile}; next attempt in {} s",
            self.path,
            state.failures,
            state.next_attempt_ms.saturating_sub(now_ms).div_ceil(1000)
        );
    }
}

/// Updates the fetch state with compare-and-swap; returns what was stored (or last tried).
fn update_state(host: &impl Host, update: impl Fn(&State) -> State) -> State {
    let mut last = State::default();
    for _ in 0..8 {
        let (raw, cas) = host.shared_data(STATE_KEY);
        let next = update(&State::decode(raw.as_deref()));
        if host.set_shared_data(STATE_KEY, &next.encode(), cas) {
            return next;
        }
        last = next;
    }
    last
}

/// The log line of a set read: in full the first time, then only what changed.
fn log_change(before: Option<&Supported>, now: &Supported, interval_s: u64) {
    match before {
        None => {
            let absent = |set: &crate::capabilities::TypeSet| {
                crate::fhir::R4_RESOURCE_TYPES
                    .iter()
                    .filter(|t| !set.contains(t) && !now.undeclared.contains(t))
                    .copied()
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let delete = if now.delete.is_empty() {
                "no DELETE is decided by it (no type lists delete)".to_owned()
            } else {
                format!("DELETE of [{}]", absent(&now.delete))
            };
            log::info!(
                "healthlake-relay: HealthLake's CapabilityStatement lists {} resource types with \
                 update and {} with delete; answered unsupported-type without calling \
                 HealthLake: PUT of [{}], {delete}; read again every {interval_s} s",
                now.update.len(),
                now.delete.len(),
                absent(&now.update)
            );
        }
        Some(b) if b == now => {
            log::debug!("healthlake-relay: HealthLake's CapabilityStatement is unchanged")
        }
        Some(b) => {
            let diff = |name: &str,
                        old: &crate::capabilities::TypeSet,
                        new: &crate::capabilities::TypeSet| {
                let added: Vec<_> = new.names().filter(|t| !old.contains(t)).collect();
                let removed: Vec<_> = old.names().filter(|t| !new.contains(t)).collect();
                format!("{name}: +[{}] -[{}]", added.join(","), removed.join(","))
            };
            log::info!(
                "healthlake-relay: HealthLake's CapabilityStatement changed: {}; {}; now {} types \
                 with update and {} with delete",
                diff("update", &b.update, &now.update),
                diff("delete", &b.delete, &now.delete),
                now.update.len(),
                now.delete.len()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    const T0: u64 = 1_796_000_000_000;
    const INTERVAL_S: u64 = 3600;

    /// Envoy as discovery sees it: shared data with CAS, a clock, calls and stats.
    #[derive(Default)]
    struct FakeHost {
        now_ms: Cell<u64>,
        data: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        next_cas: Cell<u32>,
        /// Compare-and-swap writes to refuse, as if another worker wrote first.
        conflicts: Cell<u32>,
        dispatch_fails: Cell<bool>,
        calls: RefCell<Vec<Call>>,
        events: RefCell<Vec<Event>>,
        in_use: Cell<Option<Option<usize>>>,
    }

    impl FakeHost {
        fn at(ms: u64) -> FakeHost {
            let h = FakeHost::default();
            h.now_ms.set(ms);
            h
        }
        fn advance(&self, ms: u64) {
            self.now_ms.set(self.now_ms.get() + ms);
        }
        fn count(&self, e: Event) -> usize {
            self.events.borrow().iter().filter(|x| **x == e).count()
        }
    }

    impl Clock for FakeHost {
        fn now(&self) -> Option<SystemTime> {
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(self.now_ms.get()))
        }
    }

    impl SharedData for FakeHost {
        fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            match self.data.borrow().get(key) {
                Some((v, cas)) => (Some(v.clone()), Some(*cas)),
                None => (None, None),
            }
        }
        fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
            if self.conflicts.get() > 0 {
                self.conflicts.set(self.conflicts.get() - 1);
                return false;
            }
            let mut data = self.data.borrow_mut();
            if data.get(key).map(|(_, c)| *c) != cas {
                return false;
            }
            self.next_cas.set(self.next_cas.get() + 1);
            data.insert(key.to_owned(), (value.to_vec(), self.next_cas.get()));
            true
        }
        fn overwrite_shared_data(&self, key: &str, value: &[u8]) -> bool {
            self.next_cas.set(self.next_cas.get() + 1);
            let mut data = self.data.borrow_mut();
            data.insert(key.to_owned(), (value.to_vec(), self.next_cas.get()));
            true
        }
    }

    impl Calls for FakeHost {
        fn dispatch(&self, call: &Call, _timeout: Duration) -> Result<u32, String> {
            if self.dispatch_fails.get() {
                return Err("BadArgument".to_owned());
            }
            self.calls.borrow_mut().push(call.clone());
            Ok(u32::try_from(self.calls.borrow().len()).unwrap())
        }
    }

    impl Host for FakeHost {
        fn count_fetch(&self, event: Event) {
            self.events.borrow_mut().push(event);
        }
        fn capabilities_in_use(&self, update_types: Option<usize>) {
            self.in_use.set(Some(update_types));
        }
    }

    fn config(refresh_s: u64) -> Config {
        Config::from_json(
            format!(
                r#"{{"region":"eu-west-1","datastore_id":"d1","healthlake_host":"healthlake.eu-west-1.amazonaws.com","capabilities_refresh_seconds":{refresh_s}}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    fn creds() -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "secret".into(),
            session_token: Some("token".into()),
            expires_at: None,
        }
    }

    fn statement(types: &[&str]) -> Vec<u8> {
        let resources: Vec<_> = types
            .iter()
            .map(|t| {
                let codes: &[&str] = if *t == "AuditEvent" {
                    &["read", "create"]
                } else {
                    &["read", "update", "delete"]
                };
                serde_json::json!({
                    "type": t,
                    "interaction": codes.iter().map(|c| serde_json::json!({"code": c})).collect::<Vec<_>>(),
                })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "resourceType": "CapabilityStatement",
            "fhirVersion": "4.0.1",
            "rest": [{"mode": "server", "resource": resources}],
        }))
        .unwrap()
    }

    /// Ticks `worker` with credentials and answers its call with `status` and `body`.
    fn fetch(host: &FakeHost, worker: &mut Discovery, status: u16, body: &[u8]) {
        let before = host.calls.borrow().len();
        worker.tick(host, Some(&creds()));
        assert_eq!(host.calls.borrow().len(), before + 1, "a call was sent");
        let token = u32::try_from(before + 1).unwrap();
        assert!(worker.on_answer(host, token, status, body));
    }

    #[test]
    fn off_does_nothing() {
        let host = FakeHost::at(T0);
        let mut d = Discovery::new(&config(0));
        assert!(!d.enabled());
        d.tick(&host, Some(&creds()));
        assert!(host.calls.borrow().is_empty());
        assert!(host.data.borrow().is_empty());
        assert_eq!(d.allows(Operation::Put, "Basic"), None);
    }

    #[test]
    fn waits_for_credentials_without_taking_the_lock() {
        let host = FakeHost::at(T0);
        let mut d = Discovery::new(&config(INTERVAL_S));
        d.tick(&host, None);
        assert!(host.calls.borrow().is_empty());
        assert!(host.shared_data(STATE_KEY).0.is_none());
        assert_eq!(host.in_use.get(), Some(None));
    }

    #[test]
    fn one_worker_fetches_a_signed_get_and_every_worker_uses_the_answer() {
        let host = FakeHost::at(T0);
        let mut a = Discovery::new(&config(INTERVAL_S));
        let mut b = Discovery::new(&config(INTERVAL_S));
        a.tick(&host, Some(&creds()));
        b.tick(&host, Some(&creds()));
        let calls = host.calls.borrow().clone();
        assert_eq!(calls.len(), 1, "the lock keeps the second worker out");
        let call = &calls[0];
        assert_eq!(call.cluster, "healthlake");
        assert_eq!(call.get(":method"), Some("GET"));
        assert_eq!(call.get(":path"), Some("/datastore/d1/r4/metadata"));
        assert_eq!(
            call.get(":authority"),
            Some("healthlake.eu-west-1.amazonaws.com")
        );
        assert_eq!(call.get("x-amz-security-token"), Some("token"));
        let auth = call.get("authorization").unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
            "{auth}"
        );
        assert!(
            auth.contains("/eu-west-1/healthlake/aws4_request"),
            "{auth}"
        );
        assert!(!b.awaits(1));
        assert!(!b.on_answer(&host, 1, 200, b"{}"), "not b's call");

        assert!(a.on_answer(&host, 1, 200, &statement(&["Patient", "AuditEvent"])));
        assert_eq!(a.allows(Operation::Put, "Patient"), Some(true));
        assert_eq!(a.allows(Operation::Put, "Basic"), Some(false));
        assert_eq!(a.allows(Operation::Put, "AuditEvent"), Some(false));
        assert_eq!(
            b.allows(Operation::Put, "Basic"),
            None,
            "b has not read it yet"
        );
        // A request on another worker catches up at once, without waiting for its tick; once
        // between two ticks.
        let mut c = Discovery::new(&config(INTERVAL_S));
        c.catch_up(&host);
        assert_eq!(c.allows(Operation::Put, "Basic"), Some(false));
        let mut late = Discovery::new(&config(INTERVAL_S));
        late.caught_up = true;
        late.catch_up(&host);
        assert_eq!(
            late.allows(Operation::Put, "Basic"),
            None,
            "already caught up"
        );
        late.tick(&host, None);
        assert_eq!(late.allows(Operation::Put, "Basic"), Some(false));
        let mut off = Discovery::new(&config(0));
        off.catch_up(&host);
        assert_eq!(off.allows(Operation::Put, "Basic"), None);
        host.advance(250);
        b.tick(&host, Some(&creds()));
        assert_eq!(b.allows(Operation::Put, "Basic"), Some(false));
        assert_eq!(b.allows(Operation::Delete, "Patient"), Some(true));
        assert_eq!(host.in_use.get(), Some(Some(1)));
        assert_eq!(host.count(Event::Attempted), 1);
        assert_eq!(host.count(Event::Succeeded), 1);
        assert_eq!(b.in_use().unwrap().fetched_at_ms, T0);
    }

    #[test]
    fn reads_again_after_the_interval_and_follows_changes() {
        let host = FakeHost::at(T0);
        let mut a = Discovery::new(&config(INTERVAL_S));
        let mut b = Discovery::new(&config(INTERVAL_S));
        fetch(&host, &mut a, 200, &statement(&["Patient", "Observation"]));
        host.advance(INTERVAL_S * 1000 - 1);
        a.tick(&host, Some(&creds()));
        b.tick(&host, Some(&creds()));
        assert_eq!(host.calls.borrow().len(), 1, "not due yet");
        assert_eq!(b.allows(Operation::Put, "Observation"), Some(true));
        host.advance(1);
        fetch(&host, &mut b, 200, &statement(&["Patient"]));
        host.advance(250);
        a.tick(&host, Some(&creds()));
        assert_eq!(a.allows(Operation::Put, "Observation"), Some(false));
        assert_eq!(a.in_use().unwrap().fetched_at_ms, T0 + INTERVAL_S * 1000);
    }

    #[test]
    fn failures_back_off_never_block_and_keep_the_last_set_for_a_while() {
        let host = FakeHost::at(T0);
        let mut d = Discovery::new(&config(INTERVAL_S));
        for (status, body) in [
            (500, &b"{\"resourceType\":\"OperationOutcome\"}"[..]),
            (200, &b"<html>maintenance</html>"[..]),
            (0, &b""[..]),
            (403, &b"{\"__type\":\"ExpiredTokenException\"}"[..]),
        ] {
            let state = State::decode(host.shared_data(STATE_KEY).0.as_deref());
            host.now_ms
                .set(host.now_ms.get().max(state.next_attempt_ms));
            fetch(&host, &mut d, status, body);
            assert_eq!(
                d.allows(Operation::Put, "Basic"),
                None,
                "learning meanwhile"
            );
            // Not again before the back-off ends.
            let state = State::decode(host.shared_data(STATE_KEY).0.as_deref());
            assert!(state.next_attempt_ms > host.now_ms.get());
            assert_eq!(state.lock_until_ms, 0);
            host.now_ms.set(state.next_attempt_ms - 1);
            let calls = host.calls.borrow().len();
            d.tick(&host, Some(&creds()));
            assert_eq!(host.calls.borrow().len(), calls);
        }
        let state = State::decode(host.shared_data(STATE_KEY).0.as_deref());
        assert_eq!(state.failures, 4);
        assert_eq!(host.count(Event::Failed), 4);
        // Back-off grows: the fourth waits at least 4 s (half of its 8 s ceiling).
        // A success resets it.
        host.now_ms.set(state.next_attempt_ms);
        fetch(&host, &mut d, 200, &statement(&["Patient"]));
        let fetched = host.now_ms.get();
        assert_eq!(
            State::decode(host.shared_data(STATE_KEY).0.as_deref()).failures,
            0
        );
        // Refreshes failing from now on: the set stays in use until twice the interval old.
        host.now_ms.set(fetched + INTERVAL_S * 1000);
        fetch(&host, &mut d, 503, b"");
        assert_eq!(d.allows(Operation::Put, "Basic"), Some(false));
        host.now_ms.set(fetched + 2 * INTERVAL_S * 1000 - 1);
        d.tick(&host, None);
        assert_eq!(d.allows(Operation::Put, "Basic"), Some(false));
        host.advance(1);
        d.tick(&host, None);
        assert_eq!(
            d.allows(Operation::Put, "Basic"),
            None,
            "too old: learning again"
        );
        assert_eq!(host.in_use.get(), Some(None));
    }

    #[test]
    fn the_back_off_ceiling_stays_within_the_interval() {
        let host = FakeHost::at(T0);
        let mut d = Discovery::new(&config(2));
        for _ in 0..12 {
            let state = State::decode(host.shared_data(STATE_KEY).0.as_deref());
            host.now_ms
                .set(host.now_ms.get().max(state.next_attempt_ms));
            fetch(&host, &mut d, 500, b"");
        }
        let state = State::decode(host.shared_data(STATE_KEY).0.as_deref());
        assert!(
            state.next_attempt_ms - host.now_ms.get() <= 2_000,
            "{state:?}"
        );
        assert!(
            state.next_attempt_ms - host.now_ms.get() >= 1_000,
            "{state:?}"
        );
    }

    #[test]
    fn a_lost_answer_is_abandoned_and_retried() {
        let host = FakeHost::at(T0);
        let mut d = Discovery::new(&config(INTERVAL_S));
        d.tick(&host, Some(&creds()));
        host.advance(ABANDON_CALL_MS - 1);
        d.tick(&host, Some(&creds()));
        assert_eq!(host.count(Event::Failed), 0);
        host.advance(1);
        d.tick(&host, Some(&creds()));
        assert_eq!(host.count(Event::Failed), 1);
        assert!(!d.awaits(1));
        assert!(
            !d.on_answer(&host, 1, 200, &statement(&["Patient"])),
            "too late"
        );
    }

    #[test]
    fn a_lost_lock_race_or_a_refused_call_sends_nothing_twice() {
        let host = FakeHost::at(T0);
        let mut d = Discovery::new(&config(INTERVAL_S));
        host.conflicts.set(1);
        d.tick(&host, Some(&creds()));
        assert!(
            host.calls.borrow().is_empty(),
            "another worker took the lock"
        );
        assert_eq!(host.count(Event::Attempted), 0);
        host.dispatch_fails.set(true);
        d.tick(&host, Some(&creds()));
        assert_eq!(host.count(Event::Attempted), 1);
        assert_eq!(host.count(Event::Failed), 1);
        assert!(State::decode(host.shared_data(STATE_KEY).0.as_deref()).next_attempt_ms > T0);
    }

    #[test]
    fn a_set_that_cannot_be_stored_is_a_failure() {
        let host = FakeHost::at(T0);
        let mut d = Discovery::new(&config(INTERVAL_S));
        d.tick(&host, Some(&creds()));
        host.conflicts.set(1);
        assert!(d.on_answer(&host, 1, 200, &statement(&["Patient"])));
        assert_eq!(host.count(Event::Succeeded), 0);
        assert_eq!(host.count(Event::Failed), 1);
        assert_eq!(d.allows(Operation::Put, "Patient"), None);
    }

    #[test]
    fn garbage_in_shared_data_is_no_set() {
        let host = FakeHost::at(T0);
        host.set_shared_data(PUBLISHED_KEY, b"not json", None);
        host.set_shared_data(STATE_KEY, b"[]", None);
        let mut d = Discovery::new(&config(INTERVAL_S));
        d.tick(&host, Some(&creds()));
        assert_eq!(d.allows(Operation::Put, "Patient"), None);
        assert_eq!(
            host.calls.borrow().len(),
            1,
            "an unreadable state is no lock"
        );
    }

    #[test]
    fn a_clock_stepped_back_does_not_hold_fetches_up_for_ever() {
        let host = FakeHost::at(T0);
        let far = State {
            lock_until_ms: T0 + 10 * 86_400_000,
            failures: 3,
            next_attempt_ms: T0 + 10 * 86_400_000,
        };
        host.set_shared_data(STATE_KEY, &far.encode(), None);
        let mut d = Discovery::new(&config(INTERVAL_S));
        d.tick(&host, Some(&creds()));
        assert_eq!(host.calls.borrow().len(), 1);
        // Within what can have been set, they do hold.
        let near = State {
            lock_until_ms: 0,
            failures: 1,
            next_attempt_ms: T0 + 1_000,
        };
        assert!(!near.due(T0, INTERVAL_S * 1000));
        let locked = State {
            lock_until_ms: T0 + LOCK_MS,
            ..State::default()
        };
        assert!(!locked.due(T0, INTERVAL_S * 1000));
    }

    #[test]
    fn a_record_of_another_data_store_is_not_used() {
        let host = FakeHost::at(T0);
        let mut other = Discovery::new(
            &Config::from_json(
                br#"{"region":"eu-west-1","datastore_id":"d2","healthlake_host":"h"}"#,
            )
            .unwrap(),
        );
        fetch(&host, &mut other, 200, &statement(&["Patient"]));
        assert_eq!(other.allows(Operation::Put, "Basic"), Some(false));
        let mut d = Discovery::new(&config(INTERVAL_S));
        d.tick(&host, None);
        assert_eq!(d.allows(Operation::Put, "Basic"), None);
    }

    #[test]
    fn an_answer_without_a_clock_changes_nothing() {
        #[derive(Default)]
        struct Clockless(FakeHost);
        impl Clock for Clockless {
            fn now(&self) -> Option<SystemTime> {
                None
            }
        }
        impl SharedData for Clockless {
            fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
                self.0.shared_data(key)
            }
            fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
                self.0.set_shared_data(key, value, cas)
            }
            fn overwrite_shared_data(&self, key: &str, value: &[u8]) -> bool {
                self.0.overwrite_shared_data(key, value)
            }
        }
        impl Calls for Clockless {
            fn dispatch(&self, call: &Call, timeout: Duration) -> Result<u32, String> {
                self.0.dispatch(call, timeout)
            }
        }
        impl Host for Clockless {
            fn count_fetch(&self, event: Event) {
                self.0.count_fetch(event)
            }
            fn capabilities_in_use(&self, update_types: Option<usize>) {
                self.0.capabilities_in_use(update_types)
            }
        }
        let host = FakeHost::at(T0);
        let mut d = Discovery::new(&config(INTERVAL_S));
        d.tick(&host, Some(&creds()));
        let clockless = Clockless(host);
        assert!(d.on_answer(&clockless, 1, 200, &statement(&["Patient"])));
        assert!(!d.awaits(1));
        assert!(clockless.0.shared_data(PUBLISHED_KEY).0.is_none());
        assert_eq!(clockless.0.count(Event::Failed), 0);
    }
}
