//! The credentials provider: what a request signs with, and keeping it fresh.
//!
//! One per worker, written against [`Host`] (shared data with compare-and-swap, the clock, HTTP
//! calls through Envoy clusters, stats), so that every decision is unit-tested without Envoy.
//!
//! - Credentials are published in shared data, one set per Envoy process for all workers.
//! - When a refresh is due (ahead of each set's own expiry, see [`refresh`]), the first worker
//!   to take the refresh lock (compare-and-swap) runs the [`Fetch`]: the base source's calls,
//!   then AssumeRole on top when configured, and publishes the result. The others keep signing
//!   with the still-valid set meanwhile.
//! - A failed fetch is backed off with full jitter; it names the source that failed.
//! - Writes that arrive before any credentials exist wait in the provider's queue for
//!   `first_fetch_wait_ms` at most; the glue signs or answers them as [`Provider::decided`]
//!   says.

use super::call::{Call, FetchError};
use super::fetch::{Base, Fetch, Next, Plan};
pub use super::json_answer::MAX_ANSWER_BYTES;

/// A call whose answer has not come back after this long is given up (Envoy times it out after
/// [`refresh::CALL_TIMEOUT_MS`] and answers; this is for an answer lost on the way).
pub const ABANDON_CALL_MS: u64 = refresh::CALL_TIMEOUT_MS + 5_000;
use super::refresh::{self, unix_ms, Published, RefreshState, CREDENTIALS_KEY, STATE_KEY};
use super::Credentials;
use crate::host::{Calls, Clock, SharedData};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

/// What the provider needs from its host: the clock, shared data, calls (answered to
/// [`Provider::on_answer`]), and its stats.
pub trait Host: Clock + SharedData + Calls {
    /// Counts a refresh event: `source` `None` for the whole refresh, else one source's call(s).
    fn count_refresh(&self, event: Event, source: Option<&'static str>);
    /// Seconds until the current credentials expire.
    fn expiry_seconds(&self, seconds: u64);
}

/// Refresh events, counted per refresh and per source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Attempted,
    Succeeded,
    Failed,
}

/// What a request can sign with now.
pub enum ForSigning {
    /// These credentials, of this generation (0 for the environment's).
    Ready(Rc<Credentials>, u64),
    /// None yet, or none usable: a refresh is coming.
    Wait,
    /// None will come for this request: the reason.
    Fail(String),
}

/// One worker's credentials provider. `W` is what a waiting write is to the glue.
pub struct Provider<W> {
    plan: Plan,
    /// `refresh_margin_seconds`, when configured (else derived from each set's lifetime).
    margin_ms: Option<u64>,
    first_fetch_wait_ms: u64,
    /// The environment's keys when they are used as they are.
    fixed: Option<Result<Rc<Credentials>, String>>,
    current: Option<(Published, Rc<Credentials>)>,
    state: RefreshState,
    /// The call this worker has in flight, its fetch, and when it was sent (Unix ms).
    fetch: Option<(u32, Fetch, u64)>,
    waiting: Vec<(W, u64)>,
}

impl<W> Provider<W> {
    pub fn new(plan: Plan, margin_seconds: Option<u64>, first_fetch_wait_ms: u64) -> Provider<W> {
        let fixed = match (&plan.base, &plan.role) {
            (Base::Environment(c), None) => Some(c.clone().map(Rc::new).map_err(|e| e.to_string())),
            _ => None,
        };
        Provider {
            plan,
            margin_ms: margin_seconds.map(|s| s.saturating_mul(1000)),
            first_fetch_wait_ms,
            fixed,
            current: None,
            state: RefreshState::default(),
            fetch: None,
            waiting: Vec::new(),
        }
    }

    /// Where the credentials come from.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Whether credentials are fetched (and a timer must drive [`Provider::tick`]).
    pub fn fetches(&self) -> bool {
        self.plan.fetches()
    }

    /// Why no credentials can ever come without an operator (so a write need not wait).
    pub fn hopeless(&self) -> Option<String> {
        match &self.plan.base {
            Base::Environment(Err(e)) if self.plan.role.is_some() => {
                Some(format!("{e} (the base credentials for AssumeRole)"))
            }
            Base::Environment(Err(e)) => Some(e.to_string()),
            _ => None,
        }
    }

    pub fn for_signing(&self, now: SystemTime) -> ForSigning {
        if let Some(fixed) = &self.fixed {
            return match fixed {
                Ok(c) => match c.usable_at(now) {
                    Ok(()) => ForSigning::Ready(Rc::clone(c), 0),
                    Err(e) => ForSigning::Fail(e.to_string()),
                },
                Err(e) => ForSigning::Fail(e.clone()),
            };
        }
        if let Some(why) = self.hopeless() {
            return ForSigning::Fail(why);
        }
        match &self.current {
            Some((p, c)) if p.usable(self.state.force_generation, unix_ms(now)) => {
                ForSigning::Ready(Rc::clone(c), p.generation)
            }
            _ => ForSigning::Wait,
        }
    }

    /// Holds a write until credentials exist (see [`Provider::decided`]).
    pub fn wait(&mut self, write: W, now: SystemTime) {
        self.waiting.push((write, unix_ms(now)));
    }

    /// Drops the waiting writes `keep` says no to (a request that ended while held).
    pub fn retain_waiting(&mut self, keep: impl Fn(&W) -> bool) {
        self.waiting.retain(|(w, _)| keep(w));
    }

    /// How many writes wait.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The waiting writes that can now be signed, or have waited `first_fetch_wait_ms` and are
    /// answered `503 no-credentials`, with what to do; the others keep waiting.
    pub fn decided(&mut self, now: SystemTime) -> Vec<(W, ForSigning)> {
        if self.waiting.is_empty() {
            return Vec::new();
        }
        let now_ms = unix_ms(now);
        let mut out = Vec::new();
        for (write, since) in std::mem::take(&mut self.waiting) {
            match self.for_signing(now) {
                ForSigning::Wait if now_ms.saturating_sub(since) < self.first_fetch_wait_ms => {
                    self.waiting.push((write, since));
                }
                ForSigning::Wait => out.push((
                    write,
                    ForSigning::Fail(format!(
                        "none came from {} within {} ms; see the relay's credentials log lines",
                        self.plan.label(),
                        self.first_fetch_wait_ms
                    )),
                )),
                decision => out.push((write, decision)),
            }
        }
        out
    }

    /// The source as logs name it, e.g. `container` or `web identity + assume-role`.
    pub fn label(&self) -> String {
        self.plan.label()
    }

    /// Reads the credentials the workers published, and never fetches: for a context that only
    /// reports on them (the readiness probe, `crate::readiness`).
    pub fn observe(&mut self, host: &impl Host) {
        self.sync(host);
    }

    /// Reads what shared data holds now.
    fn sync(&mut self, host: &impl Host) {
        let (value, _) = host.shared_data(CREDENTIALS_KEY);
        let published = value.as_deref().and_then(Published::decode);
        match (&published, &self.current) {
            (Some(p), Some((c, _)))
                if p.generation == c.generation && p.access_key_id == c.access_key_id => {}
            (Some(p), _) => {
                let creds = Rc::new(p.credentials());
                self.current = Some((p.clone(), creds));
            }
            (None, _) => self.current = None,
        }
        let (state, _) = host.shared_data(STATE_KEY);
        self.state = RefreshState::decode(state.as_deref());
    }

    fn margin_of(&self, published: Option<&Published>) -> u64 {
        published.map_or(refresh::MARGIN_MAX_MS, |p| p.margin_ms(self.margin_ms))
    }

    /// The timer: sync, and start a refresh when one is due and no other worker holds the lock.
    pub fn tick(&mut self, host: &impl Host) {
        if !self.fetches() {
            return;
        }
        // The refresh state first, then the credentials: the worker that fetched publishes the
        // credentials before it releases the lock, so a state read as released comes with
        // credentials at least as new as that fetch (read the other way round, a worker could see
        // no credentials yet, then the lock just released, and fetch again).
        let (raw_state, cas) = host.shared_data(STATE_KEY);
        self.sync(host);
        let Some(now) = host.now() else { return };
        let now_ms = unix_ms(now);
        if let Some((p, _)) = &self.current {
            let left = p
                .expires_at_ms
                .map_or(0, |e| e.saturating_sub(now_ms) / 1000);
            host.expiry_seconds(left);
        }
        if let Some((_, fetch, sent_ms)) = &self.fetch {
            // Envoy answers every call, at the latest when it times out; an answer that never
            // came back (lost on the way to this worker) must not stop its refreshes for good.
            if now_ms.saturating_sub(*sent_ms) < ABANDON_CALL_MS {
                return;
            }
            let e = FetchError::new(fetch.source(), "no answer came back: the call is abandoned");
            self.fetch = None;
            self.failed(host, now_ms, &e);
            return;
        }
        let published = self.current.as_ref().map(|(p, _)| p);
        let margin_ms = self.margin_of(published);
        // Take the lock: only the worker whose compare-and-swap succeeds fetches.
        let state = RefreshState::decode(raw_state.as_deref());
        if !state.due(published, now_ms, margin_ms)
            || !host.set_shared_data(STATE_KEY, &state.locked(now_ms).encode(), cas)
        {
            return;
        }
        host.count_refresh(Event::Attempted, None);
        match Fetch::start(&self.plan, now) {
            Ok((fetch, call)) => self.send(host, fetch, &call, now_ms, true),
            Err(e) => self.failed(host, now_ms, &e),
        }
    }

    /// Sends the next call of `fetch`; `first` when it is the first call to its source.
    fn send(&mut self, host: &impl Host, fetch: Fetch, call: &Call, now_ms: u64, first: bool) {
        let source = fetch.source();
        if first {
            host.count_refresh(Event::Attempted, Some(source));
        }
        match host.dispatch(call, Duration::from_millis(refresh::CALL_TIMEOUT_MS)) {
            Ok(token) => self.fetch = Some((token, fetch, now_ms)),
            Err(status) => self.failed(
                host,
                now_ms,
                &FetchError::new(
                    source,
                    format!(
                        "cannot call cluster {:?}: {status} (Envoy refused the call: the cluster is \
                         not defined, or not ready, e.g. its token file could not be read)",
                        call.cluster
                    ),
                ),
            ),
        }
    }

    /// Whether `token` is the call this worker awaits.
    pub fn awaits(&self, token: u32) -> bool {
        self.fetch.as_ref().is_some_and(|(t, _, _)| *t == token)
    }

    /// An answer came back (status 0 when the call failed: Envoy could not reach the cluster, or
    /// the call timed out). Returns false when `token` is not this worker's call.
    pub fn on_answer(&mut self, host: &impl Host, token: u32, status: u16, body: &[u8]) -> bool {
        let Some((mine, mut fetch, sent_ms)) = self.fetch.take() else {
            return false;
        };
        if mine != token {
            self.fetch = Some((mine, fetch, sent_ms));
            return false;
        }
        let now = host.now().unwrap_or(SystemTime::UNIX_EPOCH);
        let now_ms = unix_ms(now);
        let source = fetch.source();
        if body.len() > MAX_ANSWER_BYTES {
            let e = FetchError::new(
                source,
                format!(
                    "answered {status} with more than {MAX_ANSWER_BYTES} bytes: not credentials"
                ),
            );
            self.failed(host, now_ms, &e);
            return true;
        }
        if status == 0 {
            let e = FetchError::new(
                source,
                "no answer (the endpoint cannot be reached, or it did not answer within 10 s)",
            );
            self.failed(host, now_ms, &e);
            return true;
        }
        match fetch.answer(&self.plan, status, body, now) {
            Ok(Next::Call(call)) => {
                let next_source = fetch.source() != source;
                if next_source {
                    host.count_refresh(Event::Succeeded, Some(source));
                }
                // The lock covers the whole fetch: extended for each call.
                set_state(host, |s| s.locked(now_ms));
                self.send(host, fetch, &call, now_ms, next_source);
            }
            Ok(Next::Done(creds)) => {
                match refresh::check_issued(creds.expires_at.map(unix_ms), now_ms) {
                    Ok(()) => {
                        host.count_refresh(Event::Succeeded, Some(source));
                        self.publish(host, &creds, now_ms);
                    }
                    Err(why) => self.failed(host, now_ms, &FetchError::new(source, why)),
                }
            }
            Err(e) => self.failed(host, now_ms, &e),
        }
        true
    }

    fn publish(&mut self, host: &impl Host, creds: &Credentials, now_ms: u64) {
        let (old, _) = host.shared_data(CREDENTIALS_KEY);
        let old = old.as_deref().and_then(Published::decode);
        let generation = old.as_ref().map_or(1, |p| p.generation.saturating_add(1));
        let published = Published::new(creds, generation, now_ms);
        // This worker holds the lock: nobody else writes the credentials now.
        if !host.overwrite_shared_data(CREDENTIALS_KEY, &published.encode()) {
            let e = FetchError::new("shared data", "cannot store the credentials");
            self.failed(host, now_ms, &e);
            return;
        }
        let margin_ms = published.margin_ms(self.margin_ms);
        let state = RefreshState::after_publishing(&published, now_ms, margin_ms);
        let label = self.plan.label();
        if state.next_attempt_ms > 0 {
            let same = old.is_some_and(|o| o.access_key_id == published.access_key_id);
            if same {
                // IMDS and the container agents hand out the same set until shortly before it
                // expires: asked again inside the margin, that is expected.
                log::info!(
                    "healthlake-relay: {label} handed out the same credentials again, {} s before \
                     they expire; asking again in {} s",
                    published
                        .expires_at_ms
                        .map_or(0, |e| e.saturating_sub(now_ms) / 1000),
                    refresh::EARLY_REFRESH_RETRY_MS / 1000
                );
            } else {
                log::warn!(
                    "healthlake-relay: {label} handed out credentials that are already within the \
                     refresh margin ({} s before expiry): using them, and asking again in {} s \
                     (their lifetime is shorter than the margin, or the clock is off)",
                    margin_ms / 1000,
                    refresh::EARLY_REFRESH_RETRY_MS / 1000
                );
            }
        }
        set_state(host, |_| state.clone());
        host.count_refresh(Event::Succeeded, None);
        let expires = published.expires_at_ms.map_or(0, |e| e / 1000);
        log::info!(
            "healthlake-relay: credentials from {label}: …{} (generation {generation}) expire at \
             {} (Unix {expires}), in {} s; refreshed from {} s before",
            creds.key_hint(),
            crate::calendar::rfc3339(expires),
            expires.saturating_sub(now_ms / 1000),
            margin_ms / 1000
        );
        self.sync(host);
    }

    fn failed(&mut self, host: &impl Host, now_ms: u64, why: &FetchError) {
        let seed = now_ms.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let next = set_state(host, |s| s.failed(now_ms, seed));
        host.count_refresh(Event::Failed, None);
        if super::fetch::SOURCES.contains(&why.source) {
            host.count_refresh(Event::Failed, Some(why.source));
        }
        log::warn!(
            "healthlake-relay: no credentials from {} (attempt {}): {why}; next attempt in {} ms{}",
            self.plan.label(),
            next.failures,
            next.next_attempt_ms.saturating_sub(now_ms),
            if self.current.is_some() {
                "; still signing with the current credentials while they are valid"
            } else {
                "; writes are answered 503 no-credentials meanwhile"
            }
        );
        self.sync(host);
    }

    /// HealthLake said the token of `generation` expired: refresh once, and stop using it.
    pub fn force_refresh(&mut self, host: &impl Host, generation: u64) {
        if !self.fetches() {
            return;
        }
        let (value, _) = host.shared_data(CREDENTIALS_KEY);
        let current = value.as_deref().and_then(Published::decode);
        let (raw, cas) = host.shared_data(STATE_KEY);
        let state = RefreshState::decode(raw.as_deref());
        if let Some(forced) = state.force(generation, current.as_ref()) {
            if host.set_shared_data(STATE_KEY, &forced.encode(), cas) {
                log::warn!(
                    "healthlake-relay: HealthLake says the credentials of generation {generation} \
                     expired; refreshing them now"
                );
            }
        }
        self.sync(host);
    }
}

/// Updates the refresh state with compare-and-swap; returns what was stored (or last tried).
fn set_state(host: &impl Host, update: impl Fn(&RefreshState) -> RefreshState) -> RefreshState {
    let mut last = RefreshState::default();
    for _ in 0..8 {
        let (raw, cas) = host.shared_data(STATE_KEY);
        let next = update(&RefreshState::decode(raw.as_deref()));
        if host.set_shared_data(STATE_KEY, &next.encode(), cas) {
            return next;
        }
        last = next;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::assume_role::AssumeRole;
    use crate::credentials::container::{Authorization, Container};
    use crate::credentials::fetch::{ASSUME_ROLE, CONTAINER, IMDS};
    use crate::credentials::imds::Imds;
    use crate::credentials::Unavailable;
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    const T0: u64 = 1_796_000_000_000;

    /// The log lines of the current test thread (the `log` facade has one logger per process;
    /// each test reads only its own thread's lines).
    mod captured {
        use std::cell::RefCell;

        thread_local! {
            static LINES: RefCell<Vec<(log::Level, String)>> = const { RefCell::new(Vec::new()) };
        }

        struct Capture;

        impl log::Log for Capture {
            fn enabled(&self, _: &log::Metadata) -> bool {
                true
            }
            fn log(&self, record: &log::Record) {
                LINES.with(|l| {
                    l.borrow_mut()
                        .push((record.level(), record.args().to_string()))
                });
            }
            fn flush(&self) {}
        }

        static CAPTURE: Capture = Capture;

        /// Starts capturing (once per process) and forgets this thread's earlier lines.
        pub fn start() {
            if log::set_logger(&CAPTURE).is_ok() {
                log::set_max_level(log::LevelFilter::Info);
            }
            LINES.with(|l| l.borrow_mut().clear());
        }

        pub fn lines() -> Vec<(log::Level, String)> {
            LINES.with(|l| l.borrow().clone())
        }
    }

    /// The secrets every answer in these tests carries: never in a log line.
    const SECRET: &str = "wJalrXUtnFEMIsecretKEY";
    const TOKEN: &str = "IQoJb3JpZ2luSESSIONtoken";

    fn assert_no_secret_logged() {
        for (_, line) in captured::lines() {
            assert!(!line.contains(SECRET) && !line.contains(TOKEN), "{line}");
        }
    }

    /// Shared data and a clock common to several workers, as one Envoy process has.
    #[derive(Default)]
    struct Process {
        data: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        now_ms: Cell<u64>,
        next_token: Cell<u32>,
    }

    /// One worker's view of the host.
    struct FakeHost<'a> {
        process: &'a Process,
        calls: RefCell<Vec<(u32, Call)>>,
        events: RefCell<Vec<(Event, Option<&'static str>)>>,
        refuse_dispatch: Cell<bool>,
        /// Compare-and-swap writes that lose to another writer, before they succeed again.
        cas_conflicts: Cell<u32>,
        expiry: Cell<Option<u64>>,
    }

    impl<'a> FakeHost<'a> {
        fn new(process: &'a Process) -> FakeHost<'a> {
            FakeHost {
                process,
                calls: RefCell::default(),
                events: RefCell::default(),
                refuse_dispatch: Cell::new(false),
                cas_conflicts: Cell::new(0),
                expiry: Cell::new(None),
            }
        }

        fn last_call(&self) -> (u32, Call) {
            self.calls.borrow().last().cloned().unwrap()
        }

        fn count_of(&self, event: Event, source: Option<&str>) -> usize {
            self.events
                .borrow()
                .iter()
                .filter(|(e, s)| *e == event && *s == source)
                .count()
        }
    }

    impl Clock for FakeHost<'_> {
        fn now(&self) -> Option<SystemTime> {
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(self.process.now_ms.get()))
        }
    }

    impl SharedData for FakeHost<'_> {
        fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            match self.process.data.borrow().get(key) {
                Some((v, cas)) => (Some(v.clone()), Some(*cas)),
                None => (None, None),
            }
        }
        fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
            if self.cas_conflicts.get() > 0 {
                self.cas_conflicts.set(self.cas_conflicts.get() - 1);
                return false;
            }
            let mut data = self.process.data.borrow_mut();
            let current = data.get(key).map(|(_, c)| *c);
            if current != cas {
                return false;
            }
            data.insert(key.to_owned(), (value.to_vec(), current.unwrap_or(0) + 1));
            true
        }
        fn overwrite_shared_data(&self, key: &str, value: &[u8]) -> bool {
            let mut data = self.process.data.borrow_mut();
            let cas = data.get(key).map_or(1, |(_, c)| c + 1);
            data.insert(key.to_owned(), (value.to_vec(), cas));
            true
        }
    }

    impl Calls for FakeHost<'_> {
        fn dispatch(&self, call: &Call, _timeout: Duration) -> Result<u32, String> {
            if self.refuse_dispatch.get() {
                return Err("BadArgument".to_owned());
            }
            let token = self.process.next_token.get() + 1;
            self.process.next_token.set(token);
            self.calls.borrow_mut().push((token, call.clone()));
            Ok(token)
        }
    }

    impl Host for FakeHost<'_> {
        fn count_refresh(&self, event: Event, source: Option<&'static str>) {
            self.events.borrow_mut().push((event, source));
        }
        fn expiry_seconds(&self, seconds: u64) {
            self.expiry.set(Some(seconds));
        }
    }

    /// A tick that makes this worker's next call, and that call's answer.
    fn tick_and_answer<W>(w: &mut Provider<W>, h: &FakeHost, status: u16, body: &[u8]) {
        let calls = h.calls.borrow().len();
        w.tick(h);
        assert_eq!(h.calls.borrow().len(), calls + 1, "the tick made no call");
        let (token, _) = h.last_call();
        assert!(w.on_answer(h, token, status, body));
    }

    fn at(process: &Process, ms: u64) -> SystemTime {
        process.now_ms.set(ms);
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    fn json_creds(key: &str, expires_ms: u64) -> Vec<u8> {
        format!(
            r#"{{"AccessKeyId":"{key}","SecretAccessKey":"{SECRET}","Token":"{TOKEN}","Expiration":"{}"}}"#,
            crate::calendar::rfc3339(expires_ms / 1000)
        )
        .into_bytes()
    }

    fn container_plan(role: Option<AssumeRole>) -> Plan {
        Plan {
            base: Base::Container(Container {
                cluster: "container_credentials".into(),
                host: "127.0.0.1:9".into(),
                path: "/v1/credentials".into(),
                authorization: Authorization::InjectedByEnvoy,
            }),
            role,
            region: "us-east-1".into(),
        }
    }

    fn imds_plan() -> Plan {
        Plan {
            base: Base::Imds(Imds {
                cluster: "imds".into(),
                host: "127.0.0.1:9".into(),
                token_ttl_seconds: 60,
            }),
            role: None,
            region: "us-east-1".into(),
        }
    }

    fn provider(plan: Plan) -> Provider<&'static str> {
        Provider::new(plan, None, 5_000)
    }

    fn ready_key(p: &Provider<&'static str>, now: SystemTime) -> Option<String> {
        match p.for_signing(now) {
            ForSigning::Ready(c, _) => Some(c.access_key_id.clone()),
            _ => None,
        }
    }

    const HOUR: u64 = 3_600_000;

    #[test]
    fn one_worker_fetches_for_all_and_all_sign_with_it() {
        let process = Process::default();
        let now = at(&process, T0);
        let (h1, h2) = (FakeHost::new(&process), FakeHost::new(&process));
        let (mut w1, mut w2) = (
            provider(container_plan(None)),
            provider(container_plan(None)),
        );
        assert!(matches!(w1.for_signing(now), ForSigning::Wait));
        w1.tick(&h1);
        w2.tick(&h2);
        assert_eq!(h1.calls.borrow().len(), 1);
        assert_eq!(
            h2.calls.borrow().len(),
            0,
            "the second worker found the lock taken"
        );
        let (token, call) = h1.last_call();
        assert_eq!(call.get(":path"), Some("/v1/credentials"));
        assert!(
            !w2.on_answer(&h2, token, 200, b""),
            "not the second worker's call"
        );
        assert!(!w1.on_answer(&h1, token + 1, 200, b""), "not this call");
        assert!(w1.on_answer(&h1, token, 200, &json_creds("ASIAPOD1", T0 + HOUR)));
        assert_eq!(ready_key(&w1, now).as_deref(), Some("ASIAPOD1"));
        assert!(ready_key(&w2, now).is_none(), "not synced yet");
        w2.tick(&h2);
        assert_eq!(ready_key(&w2, now).as_deref(), Some("ASIAPOD1"));
        assert_eq!(h2.calls.borrow().len(), 0);
        assert_eq!(h2.expiry.get(), Some(3600));
        assert_eq!(h1.count_of(Event::Attempted, None), 1);
        assert_eq!(h1.count_of(Event::Succeeded, None), 1);
        assert_eq!(h1.count_of(Event::Attempted, Some(CONTAINER)), 1);
        assert_eq!(h1.count_of(Event::Succeeded, Some(CONTAINER)), 1);
    }

    #[test]
    fn refresh_comes_at_the_derived_margin_before_expiry() {
        let process = Process::default();
        at(&process, T0);
        let h = FakeHost::new(&process);
        let mut w = provider(container_plan(None));
        w.tick(&h);
        let (token, _) = h.last_call();
        // 20 minutes of lifetime: a margin of 5 minutes (a quarter), spread by at most a tenth of
        // the 15 minutes used before it.
        let lifetime = 20 * 60_000;
        w.on_answer(&h, token, 200, &json_creds("ASIAPOD1", T0 + lifetime));
        at(&process, T0 + lifetime - 5 * 60_000 - 1);
        w.tick(&h);
        assert_eq!(h.calls.borrow().len(), 1, "not due before the margin");
        at(&process, T0 + lifetime - 5 * 60_000 + 90_000);
        w.tick(&h);
        assert_eq!(h.calls.borrow().len(), 2, "due within the spread");
        // Still signing with the old set while the refresh runs.
        let now = at(&process, T0 + lifetime - 5 * 60_000 + 90_000);
        assert_eq!(ready_key(&w, now).as_deref(), Some("ASIAPOD1"));
        // STS's shortest session, 900 s, is refreshed from 225 s before expiry; a configured
        // margin wins.
        let p = Published::new(
            &Credentials {
                access_key_id: "A".into(),
                secret_access_key: "s".into(),
                session_token: None,
                expires_at: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(T0 + 900_000)),
            },
            1,
            T0,
        );
        assert_eq!(p.margin_ms(None), 225_000);
        assert_eq!(p.margin_ms(Some(300_000)), 300_000);
    }

    #[test]
    fn imds_runs_three_calls_holding_the_lock_throughout() {
        let process = Process::default();
        at(&process, T0);
        let (h, other) = (FakeHost::new(&process), FakeHost::new(&process));
        let (mut w, mut w2) = (provider(imds_plan()), provider(imds_plan()));
        w.tick(&h);
        let (t1, c1) = h.last_call();
        assert_eq!(c1.get(":method"), Some("PUT"));
        // The token call takes 14 s; the lock (15 s) is extended for the next call.
        at(&process, T0 + 14_000);
        assert!(w.on_answer(&h, t1, 200, b"session"));
        let (t2, _) = h.last_call();
        at(&process, T0 + 28_000);
        w2.tick(&other);
        assert!(other.calls.borrow().is_empty(), "the lock still holds");
        assert!(w.on_answer(&h, t2, 200, b"instance-role"));
        let (t3, c3) = h.last_call();
        assert!(c3.get(":path").unwrap().ends_with("/instance-role"));
        assert!(w.on_answer(&h, t3, 200, &json_creds("ASIAEC2", T0 + 6 * HOUR)));
        let now = at(&process, T0 + 29_000);
        assert_eq!(ready_key(&w, now).as_deref(), Some("ASIAEC2"));
        assert_eq!(h.count_of(Event::Attempted, Some(IMDS)), 1);
        assert_eq!(h.count_of(Event::Succeeded, Some(IMDS)), 1);
    }

    #[test]
    fn a_failed_source_backs_off_waiters_time_out_and_it_recovers() {
        let process = Process::default();
        let now = at(&process, T0);
        let h = FakeHost::new(&process);
        let mut w = provider(container_plan(None));
        w.wait("write-1", now);
        tick_and_answer(&mut w, &h, 503, b"credentials endpoint down");
        assert_eq!(h.count_of(Event::Failed, Some(CONTAINER)), 1);
        assert_eq!(h.count_of(Event::Failed, None), 1);
        let state = RefreshState::decode(h.shared_data(STATE_KEY).0.as_deref());
        assert_eq!(state.failures, 1);
        assert_eq!(state.lock_until_ms, 0);
        // Within the back-off nothing is called; the write still waits.
        w.tick(&h);
        assert_eq!(h.calls.borrow().len(), 1);
        assert!(w.decided(at(&process, T0 + 4_999)).is_empty());
        assert_eq!(w.waiting(), 1);
        let decided = w.decided(at(&process, T0 + 5_000));
        assert_eq!(decided.len(), 1);
        assert_eq!(w.waiting(), 0);
        let ForSigning::Fail(why) = &decided[0].1 else {
            panic!()
        };
        assert!(
            why.contains("none came from container within 5000 ms"),
            "{why}"
        );
        // The source is back: the next attempt after the back-off publishes, and a write that
        // waits now is signed.
        at(&process, state.next_attempt_ms);
        w.wait("write-2", at(&process, state.next_attempt_ms));
        tick_and_answer(&mut w, &h, 200, &json_creds("ASIABACK", T0 + HOUR));
        let decided = w.decided(at(&process, state.next_attempt_ms + 1));
        assert!(
            matches!(decided.as_slice(), [("write-2", ForSigning::Ready(c, 1))] if c.access_key_id == "ASIABACK")
        );
        assert_eq!(
            RefreshState::decode(h.shared_data(STATE_KEY).0.as_deref()).failures,
            0
        );
    }

    #[test]
    fn a_set_published_twice_under_one_generation_is_read_again() {
        // Two workers that both fetched (a lock that expired mid-fetch) publish generation 1
        // twice: a worker that synced the first reads the second too.
        let process = Process::default();
        let now = at(&process, T0);
        let h = FakeHost::new(&process);
        let mut w = provider(container_plan(None));
        let publish = |key: &str| {
            let c =
                crate::credentials::json_answer::parse(200, &json_creds(key, T0 + HOUR)).unwrap();
            h.overwrite_shared_data(CREDENTIALS_KEY, &Published::new(&c, 1, T0).encode());
        };
        publish("ASIAFIRST");
        w.tick(&h);
        assert_eq!(ready_key(&w, now).as_deref(), Some("ASIAFIRST"));
        publish("ASIASECOND");
        w.tick(&h);
        assert_eq!(ready_key(&w, now).as_deref(), Some("ASIASECOND"));
    }

    #[test]
    fn a_write_that_ended_while_waiting_is_forgotten() {
        let process = Process::default();
        let now = at(&process, T0);
        let h = FakeHost::new(&process);
        let mut w = provider(container_plan(None));
        for write in ["gone", "kept"] {
            w.wait(write, now);
        }
        w.retain_waiting(|write| *write != "gone");
        assert_eq!(w.waiting(), 1);
        tick_and_answer(&mut w, &h, 200, &json_creds("ASIAOK", T0 + HOUR));
        let decided = w.decided(now);
        assert!(matches!(
            decided.as_slice(),
            [("kept", ForSigning::Ready(..))]
        ));
    }

    #[test]
    fn answers_that_are_not_usable_credentials_are_failures() {
        for (status, body, expect) in [
            (200, b"garbage".to_vec(), "not JSON credentials"),
            (200, json_creds("ASIAOLD", T0 - 1000), "too soon to use"),
            (200, json_creds("ASIASOON", T0 + 60_000), "too soon to use"),
            (0, Vec::new(), "no answer"),
            (
                401,
                br#"{"code":"AccessDenied","message":"bad token"}"#.to_vec(),
                "AccessDenied",
            ),
        ] {
            let process = Process::default();
            let now = at(&process, T0);
            let h = FakeHost::new(&process);
            let mut w = provider(container_plan(None));
            tick_and_answer(&mut w, &h, status, &body);
            assert!(matches!(w.for_signing(now), ForSigning::Wait), "{expect}");
            assert!(h.shared_data(CREDENTIALS_KEY).0.is_none(), "{expect}");
            assert_eq!(h.count_of(Event::Failed, Some(CONTAINER)), 1, "{expect}");
        }
    }

    #[test]
    fn an_answer_larger_than_credentials_is_refused_whatever_its_format() {
        // A valid STS answer, padded past the limit: refused before it is read.
        let xml = format!(
            "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>\
             <AccessKeyId>ASIAPAD</AccessKeyId><SecretAccessKey>s</SecretAccessKey>\
             <SessionToken>t</SessionToken><Expiration>{}</Expiration></Credentials>\
             </AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>",
            crate::calendar::rfc3339((T0 + HOUR) / 1000)
        );
        for (extra, accepted) in [(0, true), (1, false)] {
            let mut body = xml.clone().into_bytes();
            body.resize(MAX_ANSWER_BYTES + extra, b' ');
            let process = Process::default();
            let now = at(&process, T0);
            let h = FakeHost::new(&process);
            let mut w = provider(Plan {
                base: Base::WebIdentity(crate::credentials::web_identity::WebIdentity {
                    role_arn: "arn:aws:iam::123456789012:role/irsa".into(),
                    session_name: "s".into(),
                    duration_seconds: 3600,
                    cluster: "sts_web_identity".into(),
                    host: "sts.us-east-1.amazonaws.com".into(),
                }),
                role: None,
                region: "us-east-1".into(),
            });
            tick_and_answer(&mut w, &h, 200, &body);
            assert_eq!(ready_key(&w, now).is_some(), accepted, "{extra}");
        }
    }

    #[test]
    fn a_refused_dispatch_and_cas_conflicts_are_survived() {
        let process = Process::default();
        at(&process, T0);
        let h = FakeHost::new(&process);
        let mut w = provider(container_plan(None));
        h.refuse_dispatch.set(true);
        w.tick(&h);
        assert_eq!(h.count_of(Event::Failed, Some(CONTAINER)), 1);
        let state = RefreshState::decode(h.shared_data(STATE_KEY).0.as_deref());
        assert_eq!((state.failures, state.lock_until_ms), (1, 0));
        // Losing the lock's compare-and-swap: no call; the next tick after the back-off wins.
        h.refuse_dispatch.set(false);
        at(&process, state.next_attempt_ms);
        h.cas_conflicts.set(1);
        w.tick(&h);
        assert!(h.calls.borrow().is_empty());
        w.tick(&h);
        assert_eq!(h.calls.borrow().len(), 1);
        // Conflicts while publishing: the state update retries until it lands.
        let (token, _) = h.last_call();
        h.cas_conflicts.set(3);
        w.on_answer(&h, token, 200, &json_creds("ASIAOK", T0 + HOUR));
        let state = RefreshState::decode(h.shared_data(STATE_KEY).0.as_deref());
        assert_eq!(state, RefreshState::default());
    }

    #[test]
    fn every_fetch_says_what_it_got_and_never_the_secret() {
        captured::start();
        let process = Process::default();
        at(&process, T0);
        let h = FakeHost::new(&process);
        // A configured margin of 15 minutes (with the derived one, a set fetched again is
        // refreshed at a quarter of what is left: see the next test).
        let mut w: Provider<&'static str> = Provider::new(container_plan(None), Some(900), 5_000);
        tick_and_answer(&mut w, &h, 200, &json_creds("ASIAFIRST0001", T0 + HOUR));
        let lines = captured::lines();
        assert!(
            lines.iter().any(|(level, l)| *level == log::Level::Info
                && l.contains("credentials from container: …0001 (generation 1)")
                && l.contains("(Unix 1796003600), in 3600 s; refreshed from 900 s before")),
            "{lines:?}"
        );
        assert_eq!(
            lines.len(),
            1,
            "a normal first set says nothing else: {lines:?}"
        );
        // The agent hands out the same set again inside the margin: expected, an info line.
        let due = T0 + HOUR - 900_000 + 400_000;
        at(&process, due);
        tick_and_answer(&mut w, &h, 200, &json_creds("ASIAFIRST0001", T0 + HOUR));
        let same = |lines: &[(log::Level, String)]| {
            lines
                .iter()
                .filter(|(level, l)| {
                    *level == log::Level::Info
                        && l.contains("handed out the same credentials again")
                })
                .count()
        };
        assert_eq!(same(&captured::lines()), 1, "{:?}", captured::lines());
        assert!(
            captured::lines()
                .iter()
                .any(|(_, l)| l.contains("again, 500 s before they expire; asking again in 30 s")),
            "{:?}",
            captured::lines()
        );
        // A new set that is already inside the margin: a warning, and the next attempt waits.
        let later = due + refresh::EARLY_REFRESH_RETRY_MS;
        at(&process, later);
        w.tick(&h);
        let (token, _) = h.last_call();
        w.on_answer(
            &h,
            token,
            200,
            &json_creds("ASIASHORT0002", later + 300_000),
        );
        let lines = captured::lines();
        assert_eq!(same(&lines), 1);
        assert!(
            lines.iter().any(|(level, l)| *level == log::Level::Warn
                && l.contains(
                    "container handed out credentials that are already within the refresh margin"
                )),
            "{lines:?}"
        );
        // A failure names the source and what was wrong.
        at(&process, later + refresh::EARLY_REFRESH_RETRY_MS);
        w.tick(&h);
        let (token, _) = h.last_call();
        w.on_answer(
            &h,
            token,
            401,
            br#"{"code":"AccessDenied","message":"bad token"}"#,
        );
        let lines = captured::lines();
        assert!(
            lines.iter().any(|(level, l)| *level == log::Level::Warn
                && l.contains("no credentials from container (attempt 1): container: answered 401: AccessDenied bad token")
                && l.contains("still signing with the current credentials")),
            "{lines:?}"
        );
        assert_no_secret_logged();
    }

    #[test]
    fn a_set_handed_out_again_is_refreshed_at_a_quarter_of_what_is_left() {
        let process = Process::default();
        at(&process, T0);
        let h = FakeHost::new(&process);
        let mut w = provider(container_plan(None));
        w.tick(&h);
        let (token, _) = h.last_call();
        let expiry = T0 + 6 * HOUR;
        w.on_answer(&h, token, 200, &json_creds("ASIASIXHOURS", expiry));
        // Refreshed 15 minutes (and a spread) before expiry; the agent gives the same set again.
        at(&process, expiry - 800_000);
        w.tick(&h);
        assert_eq!(h.calls.borrow().len(), 2);
        let (token, _) = h.last_call();
        w.on_answer(&h, token, 200, &json_creds("ASIASIXHOURS", expiry));
        // 800 s left: asked again from 200 s before expiry, not every 30 s meanwhile.
        at(&process, expiry - 200_000 - 1);
        w.tick(&h);
        assert_eq!(h.calls.borrow().len(), 2);
        at(&process, expiry - 200_000 + 60_000);
        w.tick(&h);
        assert_eq!(h.calls.borrow().len(), 3);
        // Still usable until 90 s before expiry.
        assert!(ready_key(&w, at(&process, expiry - 90_001)).is_some());
    }

    #[test]
    fn a_call_whose_answer_never_comes_back_is_abandoned() {
        let process = Process::default();
        at(&process, T0);
        let h = FakeHost::new(&process);
        let mut w = provider(container_plan(None));
        w.tick(&h);
        let (token, _) = h.last_call();
        // Given up 5 s after Envoy's own timeout of the call would have answered it.
        assert_eq!(ABANDON_CALL_MS, 15_000);
        at(&process, T0 + ABANDON_CALL_MS - 1);
        w.tick(&h);
        assert!(w.awaits(token), "still waiting within the timeout");
        at(&process, T0 + ABANDON_CALL_MS);
        w.tick(&h);
        assert!(!w.awaits(token));
        assert_eq!(h.count_of(Event::Failed, Some(CONTAINER)), 1);
        // The late answer is not taken; the next attempt, after the back-off, is a new call.
        assert!(!w.on_answer(&h, token, 200, &json_creds("ASIALATE", T0 + HOUR)));
        let state = RefreshState::decode(h.shared_data(STATE_KEY).0.as_deref());
        at(&process, state.next_attempt_ms);
        w.tick(&h);
        assert_eq!(h.calls.borrow().len(), 2);
    }

    #[test]
    fn assume_role_on_top_and_a_forced_refresh() {
        let role = AssumeRole {
            role_arn: "arn:aws:iam::123456789012:role/on-top".into(),
            session_name: "healthlake-relay".into(),
            external_id: None,
            duration_seconds: 3600,
            cluster: "sts".into(),
            host: "sts.us-east-1.amazonaws.com".into(),
        };
        let process = Process::default();
        let now = at(&process, T0);
        let h = FakeHost::new(&process);
        let mut w = provider(container_plan(Some(role)));
        tick_and_answer(&mut w, &h, 200, &json_creds("ASIABASE", T0 + HOUR));
        let (token, call) = h.last_call();
        assert_eq!(call.cluster, "sts");
        let xml = format!(
            "<AssumeRoleResponse><AssumeRoleResult><Credentials><AccessKeyId>ASIAROLE</AccessKeyId>\
             <SecretAccessKey>s</SecretAccessKey><SessionToken>t</SessionToken><Expiration>{}\
             </Expiration></Credentials></AssumeRoleResult></AssumeRoleResponse>",
            crate::calendar::rfc3339((T0 + HOUR) / 1000)
        );
        w.on_answer(&h, token, 200, xml.as_bytes());
        assert_eq!(ready_key(&w, now).as_deref(), Some("ASIAROLE"));
        assert_eq!(h.count_of(Event::Succeeded, Some(CONTAINER)), 1);
        assert_eq!(h.count_of(Event::Succeeded, Some(ASSUME_ROLE)), 1);
        // HealthLake says generation 1 expired: not used any more, refreshed at the next tick.
        w.force_refresh(&h, 1);
        assert!(matches!(w.for_signing(now), ForSigning::Wait));
        w.tick(&h);
        assert_eq!(h.calls.borrow().len(), 3);
        // The source hands out the same set again: published as generation 2, and used.
        let (token, _) = h.last_call();
        w.on_answer(&h, token, 200, &json_creds("ASIABASE", T0 + HOUR));
        let (token, _) = h.last_call();
        w.on_answer(&h, token, 200, xml.as_bytes());
        assert!(
            matches!(w.for_signing(now), ForSigning::Ready(c, 2) if c.access_key_id == "ASIAROLE")
        );
        // Forcing an older generation changes nothing.
        let before = h.shared_data(STATE_KEY).0;
        w.force_refresh(&h, 1);
        w.force_refresh(&h, 0);
        assert_eq!(h.shared_data(STATE_KEY).0, before);
    }

    #[test]
    fn environment_keys_need_no_fetch_and_missing_ones_fail_at_once() {
        let process = Process::default();
        let now = at(&process, T0);
        let h = FakeHost::new(&process);
        let keys = Credentials {
            access_key_id: "AKIDENV".into(),
            secret_access_key: "s".into(),
            session_token: None,
            expires_at: None,
        };
        let plan = |base| Plan {
            base,
            role: None,
            region: "us-east-1".into(),
        };
        let mut w = provider(plan(Base::Environment(Ok(keys))));
        assert!(!w.fetches());
        w.tick(&h);
        assert!(h.calls.borrow().is_empty());
        assert!(matches!(w.for_signing(now), ForSigning::Ready(_, 0)));
        w.force_refresh(&h, 0);
        assert!(h.shared_data(STATE_KEY).0.is_none());
        let missing: Provider<()> = Provider::new(
            plan(Base::Environment(Err(Unavailable::Missing(
                "AWS_ACCESS_KEY_ID",
            )))),
            None,
            5_000,
        );
        let why = missing.hopeless().unwrap();
        assert!(why.contains("AWS_ACCESS_KEY_ID"), "{why}");
        assert!(!why.contains("AssumeRole"), "{why}");
        assert!(matches!(missing.for_signing(now), ForSigning::Fail(_)));
        // Missing base keys for a role: said so, and no fetch is attempted.
        let mut no_base: Provider<()> = Provider::new(
            Plan {
                role: Some(AssumeRole {
                    role_arn: "arn:aws:iam::123456789012:role/r".into(),
                    session_name: "healthlake-relay".into(),
                    external_id: None,
                    duration_seconds: 3600,
                    cluster: "sts".into(),
                    host: "sts.us-east-1.amazonaws.com".into(),
                }),
                ..plan(Base::Environment(Err(Unavailable::Missing(
                    "AWS_ACCESS_KEY_ID",
                ))))
            },
            None,
            5_000,
        );
        let why = no_base.hopeless().unwrap();
        assert!(
            why.ends_with("(the base credentials for AssumeRole)"),
            "{why}"
        );
        assert!(matches!(no_base.for_signing(now), ForSigning::Fail(w) if w == why));
        no_base.tick(&h);
        assert!(h.calls.borrow().is_empty());
    }
}
