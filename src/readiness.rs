//! The relay's readiness: whether a write arriving now could be signed.
//!
//! Envoy's health listener (envoy.yaml, `health`) runs the same plugin under the root id
//! [`ROOT_ID`]: for `GET /ready` it asks [`check`], answers `503` with the reason when the relay
//! cannot sign, and otherwise lets Envoy's own health-check filter answer (`200`, or `503` once
//! Envoy drains). Kubernetes then sends writes only to replicas that can sign them. The probe
//! reads the credentials the workers publish; it never fetches any itself.

use crate::credentials::provider::{ForSigning, Host, Provider};
use crate::operation_outcome::{self, Severity};

/// The root id of the plugin instance that answers the probe (the writes' is `healthlake_relay`).
pub const ROOT_ID: &str = "healthlake_relay_readiness";

/// The probe's path.
pub const PATH: &[u8] = b"/ready";

/// The probe's verdict.
#[derive(Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Why not (never a secret).
    NotReady(String),
}

/// Whether the health listener serves this method: reads only (`GET`, `HEAD`). Anything else is
/// answered `405` by the relay's filter there, whatever the path: nothing but a probe or a scrape
/// goes through that listener, and never a write.
pub fn serves_method(method: &[u8]) -> bool {
    method == b"GET" || method == b"HEAD"
}

/// The `405` body for any other method on the health listener.
pub fn method_refused_body() -> Vec<u8> {
    operation_outcome::body(
        Severity::Error,
        "not-supported",
        "The health listener serves GET /ready, /live and /stats/prometheus only; writes go to the relay's listener.",
    )
}

/// Whether `path` (as received, with any query) is the probe's.
pub fn is_probe(path: &[u8]) -> bool {
    let end = path.iter().position(|&b| b == b'?').unwrap_or(path.len());
    path.get(..end) == Some(PATH)
}

/// Reads what the workers published and says whether a write could be signed now.
pub fn check<W>(provider: &mut Provider<W>, host: &impl Host) -> Readiness {
    provider.observe(host);
    let Some(now) = host.now() else {
        return Readiness::NotReady("the relay cannot read the clock".into());
    };
    match provider.for_signing(now) {
        ForSigning::Ready(..) => Readiness::Ready,
        ForSigning::Wait => Readiness::NotReady(format!(
            "no usable credentials from {} yet (none fetched, or they expire within 90 s); see \
             the relay's credentials log lines",
            provider.label()
        )),
        ForSigning::Fail(why) => Readiness::NotReady(why),
    }
}

/// The `503` body of a replica that cannot sign.
pub fn not_ready_body(why: &str) -> Vec<u8> {
    operation_outcome::body(
        Severity::Error,
        "transient",
        &format!("The relay cannot sign writes now: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::call::Call;
    use crate::credentials::container::{Authorization, Container};
    use crate::credentials::fetch::{Base, Plan};
    use crate::credentials::provider::Event;
    use crate::credentials::refresh::{Published, RefreshState, CREDENTIALS_KEY, STATE_KEY};
    use crate::credentials::{Credentials, Unavailable};
    use crate::host::{Calls, Clock, SharedData};
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;
    use std::time::{Duration, SystemTime};

    const T0_MS: u64 = 1_796_000_000_000;

    /// Shared data and a clock; any call or write would be a probe doing more than reading.
    struct FakeHost {
        data: RefCell<HashMap<String, Vec<u8>>>,
        now_ms: Option<u64>,
        writes: Cell<u32>,
    }

    impl FakeHost {
        fn new() -> FakeHost {
            FakeHost {
                data: RefCell::default(),
                now_ms: Some(T0_MS),
                writes: Cell::new(0),
            }
        }

        fn publish(&self, expires_in_ms: Option<u64>, generation: u64) {
            let published = Published {
                access_key_id: "ASIAREADINESS".into(),
                secret_access_key: "secret".into(),
                session_token: Some("token".into()),
                expires_at_ms: expires_in_ms.map(|ms| T0_MS + ms),
                issued_at_ms: T0_MS,
                generation,
            };
            self.data
                .borrow_mut()
                .insert(CREDENTIALS_KEY.into(), published.encode());
        }

        fn force(&self, generation: u64) {
            let state = RefreshState {
                force_generation: Some(generation),
                ..RefreshState::default()
            };
            self.data
                .borrow_mut()
                .insert(STATE_KEY.into(), state.encode());
        }
    }

    impl Clock for FakeHost {
        fn now(&self) -> Option<SystemTime> {
            self.now_ms
                .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
        }
    }

    impl SharedData for FakeHost {
        fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            (self.data.borrow().get(key).cloned(), Some(1))
        }
        fn set_shared_data(&self, _: &str, _: &[u8], _: Option<u32>) -> bool {
            self.writes.set(self.writes.get() + 1);
            false
        }
        fn overwrite_shared_data(&self, _: &str, _: &[u8]) -> bool {
            self.writes.set(self.writes.get() + 1);
            false
        }
    }

    impl Calls for FakeHost {
        fn dispatch(&self, _: &Call, _: Duration) -> Result<u32, String> {
            self.writes.set(self.writes.get() + 1);
            Err("a probe never calls out".into())
        }
    }

    impl Host for FakeHost {
        fn count_refresh(&self, _: Event, _: Option<&'static str>) {}
        fn expiry_seconds(&self, _: u64) {}
    }

    fn container() -> Provider<()> {
        Provider::new(
            Plan {
                base: Base::Container(Container {
                    cluster: "container_credentials".into(),
                    host: "169.254.170.23".into(),
                    path: "/v1/credentials".into(),
                    authorization: Authorization::InjectedByEnvoy,
                }),
                role: None,
                region: "us-east-1".into(),
            },
            None,
            5_000,
        )
    }

    fn environment(keys: Result<Credentials, Unavailable>) -> Provider<()> {
        Provider::new(
            Plan {
                base: Base::Environment(keys),
                role: None,
                region: "us-east-1".into(),
            },
            None,
            5_000,
        )
    }

    fn not_ready(r: Readiness) -> String {
        match r {
            Readiness::NotReady(why) => why,
            Readiness::Ready => panic!("ready, expected not ready"),
        }
    }

    #[test]
    fn the_health_listener_serves_reads_only() {
        assert!(serves_method(b"GET") && serves_method(b"HEAD"));
        for other in [&b"PUT"[..], b"POST", b"DELETE", b"get", b"CONNECT", b""] {
            assert!(!serves_method(other), "{other:?}");
        }
        let body: serde_json::Value = serde_json::from_slice(&method_refused_body()).unwrap();
        assert_eq!(body["issue"][0]["code"], "not-supported");
    }

    #[test]
    fn the_probe_path_is_exact_with_or_without_a_query() {
        assert!(is_probe(b"/ready"));
        assert!(is_probe(b"/ready?verbose=1"));
        for other in [&b"/ready/"[..], b"/readyz", b"/Ready", b"/", b"", b"/live"] {
            assert!(!is_probe(other), "{other:?}");
        }
    }

    #[test]
    fn not_ready_until_a_worker_publishes_credentials_then_ready() {
        let host = FakeHost::new();
        let mut p = container();
        let why = not_ready(check(&mut p, &host));
        assert!(
            why.contains("no usable credentials from container yet"),
            "{why}"
        );
        host.publish(Some(3_600_000), 1);
        assert_eq!(check(&mut p, &host), Readiness::Ready);
        assert_eq!(host.writes.get(), 0, "the probe only reads");
    }

    #[test]
    fn not_ready_when_the_published_credentials_are_about_to_expire_or_refused() {
        let host = FakeHost::new();
        let mut p = container();
        // Within the 90 s a signed request needs to reach AWS.
        host.publish(Some(60_000), 1);
        assert!(matches!(check(&mut p, &host), Readiness::NotReady(_)));
        host.publish(Some(3_600_000), 2);
        assert_eq!(check(&mut p, &host), Readiness::Ready);
        // HealthLake refused generation 2: no write is signed with it until a new one comes.
        host.force(2);
        assert!(matches!(check(&mut p, &host), Readiness::NotReady(_)));
        host.publish(Some(3_600_000), 3);
        assert_eq!(check(&mut p, &host), Readiness::Ready);
    }

    #[test]
    fn environment_keys_are_ready_at_once_and_missing_ones_never() {
        let host = FakeHost::new();
        let keys = Credentials {
            access_key_id: "AKIDREADINESS".into(),
            secret_access_key: "secret".into(),
            session_token: None,
            expires_at: None,
        };
        assert_eq!(check(&mut environment(Ok(keys)), &host), Readiness::Ready);
        let why = not_ready(check(
            &mut environment(Err(Unavailable::Missing("AWS_ACCESS_KEY_ID"))),
            &host,
        ));
        assert!(why.contains("AWS_ACCESS_KEY_ID"), "{why}");
    }

    #[test]
    fn not_ready_without_a_clock() {
        let mut host = FakeHost::new();
        host.publish(Some(3_600_000), 1);
        host.now_ms = None;
        let why = not_ready(check(&mut container(), &host));
        assert!(why.contains("clock"), "{why}");
    }

    #[test]
    fn the_answer_is_an_operation_outcome_with_the_reason() {
        let body: serde_json::Value =
            serde_json::from_slice(&not_ready_body("none came from imds")).unwrap();
        assert_eq!(body["resourceType"], "OperationOutcome");
        assert_eq!(body["issue"][0]["code"], "transient");
        assert!(body["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("cannot sign writes now: none came from imds"));
    }
}
