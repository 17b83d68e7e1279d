//! Temporary credentials the emulator issues itself, playing two links of the AWS SDK default
//! credential chain on the main listener:
//!
//! - [`imds`]: the EC2 instance metadata service, IMDSv2 only (`PUT /latest/api/token`, then
//!   `GET /latest/meta-data/iam/security-credentials/[ROLE]` with the session token).
//! - [`container`]: the container credentials endpoint of ECS task roles and the EKS Pod Identity
//!   agent (`GET /v1/credentials`, `GET /v2/credentials/ID`), with an optional `Authorization`
//!   token read from a file.
//! - [`faults`]: what tests make those endpoints do wrong (`PUT /_emulator/credentials/faults`).
//! - [`random`]: the random key ids, secrets and tokens.
//! - [`Issuer`]: their shared state: the settings (lifetime, down), the fault queue, the IMDS
//!   sessions, the call log and the issued sets. The data plane accepts an issued set, with its
//!   token, until it expires, exactly like a set issued through the STS proxy.

pub mod container;
pub mod faults;
pub mod imds;
pub mod random;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::sigv4::Credential;
use crate::timefmt;
use faults::{CredentialFault, CredentialFaultInjector, CredentialFaultStatus};

/// The account the issued sets belong to (the container endpoint's `AccountId`).
pub const ACCOUNT_ID: &str = "123456789012";
/// How long an issued set lasts unless `PUT /_emulator/credentials/settings` says otherwise.
pub const DEFAULT_LIFETIME_SECONDS: u64 = 21_600;
/// The longest lifetime the settings take (a year).
pub const MAX_LIFETIME_SECONDS: u64 = 31_536_000;
/// The body of every credential request's answer while the endpoints are down.
pub const DOWN_BODY: &str = "credentials endpoint down";

type Resp = Response<Full<Bytes>>;

/// Who issued a temporary credential set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IssuedBy {
    /// STS, through the recording proxy (`--sts-upstream`).
    #[default]
    Sts,
    /// The IMDSv2 endpoint.
    Imds,
    /// The container credentials endpoint.
    Container,
}

impl IssuedBy {
    /// `"sts"`, `"imds"` or `"container"`.
    pub fn as_str(self) -> &'static str {
        match self {
            IssuedBy::Sts => "sts",
            IssuedBy::Imds => "imds",
            IssuedBy::Container => "container",
        }
    }
}

fn default_lifetime() -> u64 {
    DEFAULT_LIFETIME_SECONDS
}

/// What `PUT /_emulator/credentials/settings` takes, and its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// How long a set issued from now on lasts, in seconds (1..=[`MAX_LIFETIME_SECONDS`]).
    #[serde(default = "default_lifetime")]
    pub lifetime_seconds: u64,
    /// While true, both endpoints answer every credential request `503` ([`DOWN_BODY`]).
    #[serde(default)]
    pub down: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lifetime_seconds: DEFAULT_LIFETIME_SECONDS,
            down: false,
        }
    }
}

impl Settings {
    /// Parses and checks a JSON body (absent fields take their defaults); errors are one line,
    /// meant for the caller.
    pub fn from_json(body: &[u8]) -> Result<Self, String> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(
                "the body is empty; send a JSON object, e.g. {\"lifetime_seconds\":900,\"down\":false}"
                    .to_string(),
            );
        }
        let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        if !value.is_object() {
            return Err(
                "expected a JSON object, e.g. {\"lifetime_seconds\":900,\"down\":false}".into(),
            );
        }
        let settings: Settings = serde_json::from_value(value).map_err(|e| e.to_string())?;
        if !(1..=MAX_LIFETIME_SECONDS).contains(&settings.lifetime_seconds) {
            return Err(format!(
                "lifetime_seconds must be 1 to {MAX_LIFETIME_SECONDS}, not {}",
                settings.lifetime_seconds
            ));
        }
        Ok(settings)
    }
}

/// One request to a credential endpoint, as listed by `GET /_emulator/credentials`. Secrets,
/// session tokens, IMDS session tokens and `Authorization` values are never recorded.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CredentialCall {
    /// 1, 2, ... in the order the requests were answered.
    pub seq: u64,
    /// When it was answered, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// `imds` or `container`.
    pub source: IssuedBy,
    pub method: String,
    /// The path, without the query.
    pub path: String,
    pub status: u16,
    /// The access key id of the set handed out (also with an `expired` or `bad-expiration`
    /// fault); null otherwise.
    pub issued_access_key_id: Option<String>,
    /// Its expiry as written in the answer (for `bad-expiration`: the real one), RFC 3339 UTC,
    /// whole seconds.
    pub expiration: Option<String>,
    /// The fault injected into this request (`"garbled"`, `"expired"`, `"503"`, ...), or null.
    pub fault: Option<String>,
    /// Why the request was refused (`401`, `403`, `400`, ...), or null.
    pub error: Option<String>,
}

/// An issued set, as listed by `GET /_emulator/credentials`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct IssuedStatus {
    pub access_key_id: String,
    /// As the endpoint wrote it (RFC 3339 UTC, whole seconds); the real expiry for a set handed
    /// out with `bad-expiration`.
    pub expiration: String,
    /// When it stops being accepted, RFC 3339 UTC with milliseconds: the expiration, or the
    /// moment of an earlier `POST /_emulator/credentials/expire`.
    pub expires_at: String,
    pub expired: bool,
    /// `imds` or `container`.
    pub source: IssuedBy,
}

/// The body of `GET /_emulator/credentials`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CredentialsStatus {
    pub calls: Vec<CredentialCall>,
    pub issued: Vec<IssuedStatus>,
    pub settings: Settings,
}

#[derive(Clone, Debug)]
struct Vended {
    /// With a session token and `expires_at`.
    credential: Credential,
    expiration: String,
    source: IssuedBy,
}

/// A request to a credential endpoint, as the handlers see it.
#[derive(Clone, Copy, Debug)]
pub struct EndpointRequest<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// When it arrived.
    pub now: SystemTime,
}

/// An answer, with the call as recorded.
#[derive(Debug)]
pub struct Handled {
    pub resp: Resp,
    pub call: CredentialCall,
    /// A short account of the answer for the stderr log line (no secrets).
    pub summary: String,
}

/// What a handler decided, before it is recorded.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// The access key id and the expiration text of a set handed out.
    issued: Option<(String, String)>,
    fault: Option<CredentialFault>,
    error: Option<String>,
    /// For the log line, when nothing else says what happened.
    note: Option<String>,
}

impl Reply {
    fn new(status: StatusCode, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Reply {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
            issued: None,
            fault: None,
            error: None,
            note: None,
        }
    }

    /// A `text/plain` answer.
    fn text(status: StatusCode, body: impl Into<Vec<u8>>) -> Self {
        Reply::new(status, TEXT_PLAIN, body)
    }

    /// A refusal: `error` is recorded.
    fn refused(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }

    fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// The content type of IMDS answers (credentials included: IMDS serves everything as text) and
/// of the plain error answers.
pub const TEXT_PLAIN: &str = "text/plain";
/// The content type of the container endpoint's answers.
pub const APPLICATION_JSON: &str = "application/json";

/// A `405` naming the allowed method.
fn method_not_allowed(method: &Method, allowed: &'static str) -> Reply {
    Reply::text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n")
        .with_header("allow", allowed.to_string())
        .refused(format!("method {method} is not allowed (only {allowed})"))
}

/// `t` rounded down to a whole second (the `Expiration` is written in whole seconds, and the
/// set is accepted until exactly what is written).
fn whole_seconds(t: SystemTime) -> SystemTime {
    timefmt::unix_to_system_time(timefmt::system_time_to_unix(t))
}

/// The shared state of the credential endpoints.
#[derive(Debug, Default)]
pub struct Issuer {
    settings: Settings,
    faults: CredentialFaultInjector,
    sessions: imds::Sessions,
    calls: Vec<CredentialCall>,
    seq: u64,
    issued: Vec<Vended>,
}

impl Issuer {
    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// Puts new settings in force (for sets issued from now on).
    pub fn replace_settings(&mut self, settings: Settings) {
        self.settings = settings;
    }

    /// The faults not consumed yet and the counters.
    pub fn faults(&self) -> CredentialFaultStatus {
        self.faults.status()
    }

    /// Replaces the fault queue; the counters are kept.
    pub fn replace_faults(&mut self, settings: faults::CredentialFaultSettings) {
        self.faults.replace(settings);
    }

    /// Empties the fault queue and clears the counters.
    pub fn reset_faults(&mut self) {
        self.faults.reset();
    }

    /// What `POST /_emulator/reset` does: no faults, counters cleared, the default settings
    /// (lifetime, not down). The issued sets, the IMDS sessions and the call log are kept.
    pub fn reset(&mut self) {
        self.faults.reset();
        self.settings = Settings::default();
    }

    /// The call log, the issued sets (`expired` as of `now`) and the settings.
    pub fn status(&self, now: SystemTime) -> CredentialsStatus {
        CredentialsStatus {
            calls: self.calls.clone(),
            issued: self
                .issued
                .iter()
                .map(|v| IssuedStatus {
                    access_key_id: v.credential.access_key_id.clone(),
                    expiration: v.expiration.clone(),
                    expires_at: v
                        .credential
                        .expires_at
                        .map(timefmt::format_rfc3339_millis)
                        .unwrap_or_default(),
                    expired: v.credential.is_expired_at(now),
                    source: v.source,
                })
                .collect(),
            settings: self.settings,
        }
    }

    /// True when no set was issued.
    pub fn is_empty(&self) -> bool {
        self.issued.is_empty()
    }

    /// The issued sets and who issued them, in the order issued.
    pub fn credentials(&self) -> impl Iterator<Item = (&Credential, IssuedBy)> {
        self.issued.iter().map(|v| (&v.credential, v.source))
    }

    /// The issued sets with their `Expiration` text and source (for a state file; these carry
    /// secrets and session tokens).
    pub fn issued_sets(&self) -> impl Iterator<Item = (&Credential, &str, IssuedBy)> {
        self.issued
            .iter()
            .map(|v| (&v.credential, v.expiration.as_str(), v.source))
    }

    /// Accepts a set issued before (loaded from a state file) until its `expires_at`. Replaces
    /// a set with the same access key id. A set without `expires_at` or a session token, or
    /// whose source is not `imds` or `container`, is not restored.
    pub fn restore_issued(
        &mut self,
        credential: Credential,
        expiration: String,
        source: IssuedBy,
    ) -> bool {
        if credential.expires_at.is_none()
            || credential.session_token.is_none()
            || source == IssuedBy::Sts
        {
            return false;
        }
        self.accept(Vended {
            credential,
            expiration,
            source,
        });
        true
    }

    /// Makes every issued set that has not expired yet expire at `now`; returns how many.
    pub fn expire_all(&mut self, now: SystemTime) -> usize {
        let mut n = 0;
        for v in &mut self.issued {
            if !v.credential.is_expired_at(now) {
                v.credential.expires_at = Some(now);
                n += 1;
            }
        }
        n
    }

    fn accept(&mut self, vended: Vended) {
        self.issued
            .retain(|v| v.credential.access_key_id != vended.credential.access_key_id);
        self.issued.push(vended);
    }

    /// Answers a credential-issuing request: a fresh set (accepted from now until it expires)
    /// in the endpoint's format, or what the next queued fault says. While `frozen` (the state
    /// was saved for shutdown) nothing is issued: `503`.
    fn vend(&mut self, source: IssuedBy, now: SystemTime, frozen: bool) -> Reply {
        if frozen {
            return Reply::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{}\n", crate::server::SHUTTING_DOWN),
            )
            .refused(crate::server::SHUTTING_DOWN);
        }
        let fault = self.faults.take();
        let content_type = match source {
            IssuedBy::Container => APPLICATION_JSON,
            IssuedBy::Sts | IssuedBy::Imds => TEXT_PLAIN,
        };
        let now_s = whole_seconds(now);
        let lifetime = Duration::from_secs(self.settings.lifetime_seconds);
        let real_expiry = now_s.checked_add(lifetime).unwrap_or(now_s);
        let canned = |body: Vec<u8>| {
            let mut reply = Reply::new(StatusCode::OK, content_type, body);
            reply.fault = fault;
            reply
        };
        match fault {
            Some(CredentialFault::Garbled) => return canned(faults::garbled_body()),
            Some(CredentialFault::NoCredentials) => {
                let doc = document(
                    source,
                    None,
                    &timefmt::format_rfc3339_seconds(real_expiry),
                    now_s,
                );
                return canned(serde_json::to_vec(&doc).unwrap_or_default());
            }
            Some(CredentialFault::Huge) => {
                let doc = document(
                    source,
                    None,
                    &timefmt::format_rfc3339_seconds(real_expiry),
                    now_s,
                );
                return canned(faults::huge_body(doc));
            }
            Some(CredentialFault::ServerError(status)) => {
                let mut reply = Reply::text(status, faults::server_error_body(status));
                reply.fault = fault;
                return reply;
            }
            Some(CredentialFault::BadExpiration | CredentialFault::Expired) | None => {}
        }
        let expires_at = if fault == Some(CredentialFault::Expired) {
            now_s
                .checked_sub(faults::EXPIRED_AGO)
                .unwrap_or(SystemTime::UNIX_EPOCH)
        } else {
            real_expiry
        };
        let expiration = timefmt::format_rfc3339_seconds(expires_at);
        let written = if fault == Some(CredentialFault::BadExpiration) {
            faults::BAD_EXPIRATION.to_string()
        } else {
            expiration.clone()
        };
        let credential = Credential::new(
            random::access_key_id(),
            random::secret_access_key(),
            Some(random::session_token()),
        )
        .expiring_at(expires_at);
        let doc = document(source, Some(&credential), &written, now_s);
        let mut reply = canned(serde_json::to_vec(&doc).unwrap_or_default());
        reply.issued = Some((credential.access_key_id.clone(), expiration.clone()));
        self.accept(Vended {
            credential,
            expiration,
            source,
        });
        reply
    }

    /// Records the call and builds the answer.
    fn finish(&mut self, source: IssuedBy, req: &EndpointRequest<'_>, reply: Reply) -> Handled {
        self.seq = self.seq.saturating_add(1);
        let (issued_access_key_id, expiration) = match &reply.issued {
            Some((akid, expiration)) => (Some(akid.clone()), Some(expiration.clone())),
            None => (None, None),
        };
        let call = CredentialCall {
            seq: self.seq,
            time: timefmt::format_rfc3339_millis(req.now),
            source,
            method: req.method.as_str().to_string(),
            path: req.path.to_string(),
            status: reply.status.as_u16(),
            issued_access_key_id,
            expiration,
            fault: reply.fault.map(|f| f.to_string()),
            error: reply.error.clone(),
        };
        self.calls.push(call.clone());
        let mut summary = match (&reply.issued, &reply.error, &reply.note) {
            (Some((akid, expiration)), _, _) => format!("issued {akid} (expires {expiration})"),
            (None, Some(e), _) => format!("refused: {e}"),
            (None, None, Some(note)) => note.clone(),
            (None, None, None) => "no credentials issued".to_string(),
        };
        if let Some(f) = reply.fault {
            summary.push_str(&format!(", injected credentials fault {f}"));
        }
        let mut resp = Response::new(Full::new(Bytes::from(reply.body)));
        *resp.status_mut() = reply.status;
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(reply.content_type),
        );
        for (name, value) in reply.headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                resp.headers_mut().append(n, v);
            }
        }
        Handled {
            resp,
            call,
            summary,
        }
    }
}

/// The JSON document of a credentials answer, in the endpoint's format: IMDS writes `Code`,
/// `LastUpdated`, `Type`, the set, `Expiration`; the container endpoint the set, `Expiration` and
/// `AccountId`. Without a set (`no-credentials`, `huge`) the set's three members are left out.
fn document(
    source: IssuedBy,
    credential: Option<&Credential>,
    expiration: &str,
    now: SystemTime,
) -> Map<String, Value> {
    let mut doc = Map::new();
    let imds = source != IssuedBy::Container;
    if imds {
        doc.insert("Code".into(), "Success".into());
        doc.insert(
            "LastUpdated".into(),
            timefmt::format_rfc3339_seconds(now).into(),
        );
        doc.insert("Type".into(), "AWS-HMAC".into());
    }
    if let Some(c) = credential {
        doc.insert("AccessKeyId".into(), c.access_key_id.clone().into());
        doc.insert("SecretAccessKey".into(), c.secret_access_key.clone().into());
        doc.insert(
            "Token".into(),
            c.session_token.clone().unwrap_or_default().into(),
        );
    }
    doc.insert("Expiration".into(), expiration.into());
    if !imds {
        doc.insert("AccountId".into(), ACCOUNT_ID.into());
    }
    doc
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn t0() -> SystemTime {
        // 2026-11-27T22:00:00.250Z
        timefmt::unix_to_system_time(1_795_816_800) + Duration::from_millis(250)
    }

    #[test]
    fn settings_parse_and_check() {
        assert_eq!(Settings::from_json(b"{}").unwrap(), Settings::default());
        assert_eq!(
            Settings::from_json(br#"{"lifetime_seconds":900,"down":true}"#).unwrap(),
            Settings {
                lifetime_seconds: 900,
                down: true
            }
        );
        for (body, needle) in [
            ("", "body is empty"),
            ("[]", "expected a JSON object"),
            (r#"{"lifetime_seconds":0}"#, "must be 1 to"),
            (r#"{"lifetime_seconds":31536001}"#, "must be 1 to"),
            (r#"{"lifetime_seconds":-1}"#, "invalid value"),
            (r#"{"down":"yes"}"#, "invalid type"),
            (r#"{"lifetime":900}"#, "unknown field `lifetime`"),
        ] {
            let e = Settings::from_json(body.as_bytes()).unwrap_err();
            assert!(e.contains(needle), "{body}: {e}");
        }
    }

    #[test]
    fn vends_sets_in_each_format_and_accepts_them() {
        let mut issuer = Issuer::default();
        let reply = issuer.vend(IssuedBy::Imds, t0(), false);
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.content_type, TEXT_PLAIN);
        let v: Value = serde_json::from_slice(&reply.body).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "Code",
                "LastUpdated",
                "Type",
                "AccessKeyId",
                "SecretAccessKey",
                "Token",
                "Expiration"
            ]
        );
        assert_eq!(v["LastUpdated"], "2026-11-27T22:00:00Z");
        assert_eq!(v["Expiration"], "2026-11-28T04:00:00Z");
        let (akid, expiration) = reply.issued.unwrap();
        assert_eq!(v["AccessKeyId"], akid.as_str());
        assert_eq!(expiration, "2026-11-28T04:00:00Z");
        let (cred, source) = issuer.credentials().next().unwrap();
        assert_eq!(source, IssuedBy::Imds);
        assert_eq!(v["SecretAccessKey"], cred.secret_access_key.as_str());
        assert_eq!(v["Token"], cred.session_token.as_deref().unwrap());
        assert_eq!(
            cred.expires_at,
            timefmt::parse_iso8601("2026-11-28T04:00:00Z")
        );

        issuer.replace_settings(Settings {
            lifetime_seconds: 60,
            down: false,
        });
        let reply = issuer.vend(IssuedBy::Container, t0(), false);
        assert_eq!(reply.content_type, APPLICATION_JSON);
        let v: Value = serde_json::from_slice(&reply.body).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "AccessKeyId",
                "SecretAccessKey",
                "Token",
                "Expiration",
                "AccountId"
            ]
        );
        assert_eq!(v["Expiration"], "2026-11-27T22:01:00Z");
        assert_eq!(v["AccountId"], ACCOUNT_ID);

        let status = issuer.status(t0() + Duration::from_secs(60));
        assert_eq!(status.issued.len(), 2);
        assert_eq!(
            (status.issued[0].expired, status.issued[1].expired),
            (false, true)
        );
        assert_eq!(status.issued[1].expires_at, "2026-11-27T22:01:00.000Z");
        let shown = serde_json::to_string(&status).unwrap();
        for (c, _) in issuer.credentials() {
            assert!(!shown.contains(&c.secret_access_key));
            assert!(!shown.contains(c.session_token.as_deref().unwrap()));
        }

        // Frozen: nothing issued.
        let reply = issuer.vend(IssuedBy::Container, t0(), true);
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(issuer.credentials().count(), 2);
    }

    #[test]
    fn faults_shape_the_answer() {
        let mut issuer = Issuer::default();
        issuer.replace_faults(
            faults::CredentialFaultSettings::from_json(
                br#"{"next":["garbled","no-credentials","huge","502","bad-expiration","expired"]}"#,
            )
            .unwrap(),
        );
        let r = issuer.vend(IssuedBy::Container, t0(), false);
        assert_eq!((r.status, r.body), (StatusCode::OK, faults::garbled_body()));
        let r = issuer.vend(IssuedBy::Imds, t0(), false);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["Code"], "Success");
        assert!(v.get("AccessKeyId").is_none() && v.get("Token").is_none());
        let r = issuer.vend(IssuedBy::Container, t0(), false);
        assert_eq!(r.body.len(), faults::HUGE_BODY_BYTES);
        let r = issuer.vend(IssuedBy::Container, t0(), false);
        assert_eq!(r.status, StatusCode::BAD_GATEWAY);
        assert!(issuer.is_empty());

        let r = issuer.vend(IssuedBy::Imds, t0(), false);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["Expiration"], "not-a-date");
        assert_eq!(r.issued.unwrap().1, "2026-11-28T04:00:00Z");
        let r = issuer.vend(IssuedBy::Imds, t0(), false);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["Expiration"], "2026-11-27T21:00:00Z");
        let status = issuer.status(t0());
        assert_eq!(
            status.issued.iter().map(|i| i.expired).collect::<Vec<_>>(),
            [false, true]
        );
        assert_eq!(issuer.faults().injected.len(), 6);
        issuer.reset();
        assert!(issuer.faults().injected.is_empty());
        assert_eq!(issuer.credentials().count(), 2);
    }

    #[test]
    fn restore_and_expire() {
        let mut issuer = Issuer::default();
        let c = Credential::new("ASIARESTORED0000001", "s", Some("t".into()))
            .expiring_at(t0() + Duration::from_secs(60));
        assert!(!issuer.restore_issued(c.clone(), "x".into(), IssuedBy::Sts));
        assert!(!issuer.restore_issued(
            Credential::new("ASIANOEXPIRY", "s", Some("t".into())),
            "x".into(),
            IssuedBy::Imds
        ));
        assert!(issuer.restore_issued(c.clone(), "x".into(), IssuedBy::Container));
        assert!(issuer.restore_issued(c, "y".into(), IssuedBy::Container));
        assert_eq!(issuer.issued_sets().count(), 1);
        assert_eq!(issuer.expire_all(t0()), 1);
        assert_eq!(issuer.expire_all(t0()), 0);
        assert!(issuer.status(t0()).issued[0].expired);
    }
}
