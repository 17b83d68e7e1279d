//! Faults of the credential endpoints (`PUT /_emulator/credentials/faults`): one `next` entry is
//! consumed per credential-issuing request (the IMDS `GET .../security-credentials/ROLE`, the
//! container `GET /v1/credentials` or `/v2/credentials/...`), and makes the endpoint answer in a
//! way the relay's credential provider must survive. The IMDS token `PUT` and the role listing
//! consume nothing.

use std::fmt;
use std::time::Duration;

use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::faults::queue::{FaultQueue, FaultQueueSettings, FaultQueueStatus};

/// The `Expiration` written by `bad-expiration`.
pub const BAD_EXPIRATION: &str = "not-a-date";

/// How far in the past `expired` puts the `Expiration`.
pub const EXPIRED_AGO: Duration = Duration::from_secs(3600);

/// The size of the body of a `huge` answer, in bytes.
pub const HUGE_BODY_BYTES: usize = 4_000_000;

/// One credential-endpoint fault.
///
/// Written as text (in `next` and in the call log's `fault` field) as `"garbled"`,
/// `"no-credentials"`, `"bad-expiration"`, `"expired"`, `"huge"` and `"500"`..`"599"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum CredentialFault {
    /// `200`, a body that is neither JSON nor UTF-8; nothing issued.
    Garbled,
    /// `200`, a JSON object without `AccessKeyId`, `SecretAccessKey` and `Token`; nothing issued.
    NoCredentials,
    /// A real set, accepted with its real expiry, whose `Expiration` reads [`BAD_EXPIRATION`].
    BadExpiration,
    /// A real set whose `Expiration` is [`EXPIRED_AGO`] in the past, accepted as already expired.
    Expired,
    /// `200`, a JSON object without credentials padded to [`HUGE_BODY_BYTES`]; nothing issued.
    Huge,
    /// That 5xx status with a small `text/plain` body; nothing issued.
    ServerError(StatusCode),
}

impl CredentialFault {
    /// Parses a `next` entry.
    pub fn parse(s: &str) -> Result<CredentialFault, String> {
        match s {
            "garbled" => return Ok(CredentialFault::Garbled),
            "no-credentials" => return Ok(CredentialFault::NoCredentials),
            "bad-expiration" => return Ok(CredentialFault::BadExpiration),
            "expired" => return Ok(CredentialFault::Expired),
            "huge" => return Ok(CredentialFault::Huge),
            _ => {}
        }
        if s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse::<u16>()
                .ok()
                .filter(|c| (500..=599).contains(c))
                .and_then(|c| StatusCode::from_u16(c).ok())
                .map(CredentialFault::ServerError)
                .ok_or_else(|| format!("\"{s}\": a credentials fault status must be 500..599"));
        }
        Err(format!(
            "unknown credentials fault \"{s}\": expected \"garbled\", \"no-credentials\", \
             \"bad-expiration\", \"expired\", \"huge\" or \"500\"..\"599\""
        ))
    }

    /// Whether a real credential set is issued (and accepted by the data plane) anyway.
    pub fn issues_a_set(&self) -> bool {
        matches!(
            self,
            CredentialFault::BadExpiration | CredentialFault::Expired
        )
    }
}

impl fmt::Display for CredentialFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialFault::Garbled => f.write_str("garbled"),
            CredentialFault::NoCredentials => f.write_str("no-credentials"),
            CredentialFault::BadExpiration => f.write_str("bad-expiration"),
            CredentialFault::Expired => f.write_str("expired"),
            CredentialFault::Huge => f.write_str("huge"),
            CredentialFault::ServerError(status) => write!(f, "{}", status.as_u16()),
        }
    }
}

impl TryFrom<String> for CredentialFault {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        CredentialFault::parse(&s)
    }
}

impl From<CredentialFault> for String {
    fn from(f: CredentialFault) -> String {
        f.to_string()
    }
}

/// The body of a `garbled` answer: the start of a credentials document, the bytes
/// `0xff 0xfe 0x00`, more text, then a cut UTF-8 sequence (`0xe2 0x82`). Neither JSON nor UTF-8.
pub fn garbled_body() -> Vec<u8> {
    let mut body = b"{\"Code\":\"Success\",\"AccessKeyId\":\"ASIA".to_vec();
    body.extend_from_slice(&[0xff, 0xfe, 0x00]);
    body.extend_from_slice(b"\",\"SecretAccessKey\":\"wJal");
    body.extend_from_slice(&[0xe2, 0x82]);
    body
}

/// `document` (a JSON object) with a `"Padding"` member appended that brings its serialised
/// size to exactly [`HUGE_BODY_BYTES`] (or just the member, if it is already that large).
pub fn huge_body(mut document: serde_json::Map<String, serde_json::Value>) -> Vec<u8> {
    document.insert("Padding".into(), serde_json::Value::String(String::new()));
    let bare = serde_json::to_vec(&document).unwrap_or_default();
    let room = HUGE_BODY_BYTES.saturating_sub(bare.len());
    document.insert(
        "Padding".into(),
        serde_json::Value::String("x".repeat(room)),
    );
    serde_json::to_vec(&document).unwrap_or_default()
}

/// The body of a `500`..`599` answer.
pub fn server_error_body(status: StatusCode) -> String {
    format!(
        "{} {} (fault injected by the HealthLake emulator)\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Server Error")
    )
}

/// What `PUT /_emulator/credentials/faults` takes: `next`, faults for the next
/// credential-issuing requests.
pub type CredentialFaultSettings = FaultQueueSettings<CredentialFault>;

/// The answer of `GET /_emulator/credentials/faults`.
pub type CredentialFaultStatus = FaultQueueStatus<CredentialFault>;

/// The credential endpoints' fault queue and its counters.
pub type CredentialFaultInjector = FaultQueue<CredentialFault>;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_entries() {
        for s in [
            "garbled",
            "no-credentials",
            "bad-expiration",
            "expired",
            "huge",
            "500",
            "503",
            "599",
        ] {
            assert_eq!(CredentialFault::parse(s).unwrap().to_string(), s);
        }
        for (s, needle) in [
            ("499", "500..599"),
            ("600", "500..599"),
            ("404", "500..599"),
            ("5000", "unknown credentials fault"),
            ("reset", "unknown credentials fault"),
            ("", "unknown credentials fault"),
            ("Garbled", "unknown credentials fault"),
        ] {
            let e = CredentialFault::parse(s).unwrap_err();
            assert!(e.contains(needle), "{s}: {e}");
        }
        assert!(CredentialFault::Expired.issues_a_set());
        assert!(CredentialFault::BadExpiration.issues_a_set());
        assert!(!CredentialFault::Huge.issues_a_set());
    }

    #[test]
    fn settings_take_credential_faults() {
        let s = CredentialFaultSettings::from_json(br#"{"next":["expired","503"]}"#).unwrap();
        assert_eq!(
            s.next,
            [
                CredentialFault::Expired,
                CredentialFault::ServerError(StatusCode::SERVICE_UNAVAILABLE)
            ]
        );
        for (body, needle) in [
            (
                r#"{"next":["teapot"]}"#,
                "unknown credentials fault \"teapot\"",
            ),
            (r#"{"next":["429"]}"#, "500..599"),
        ] {
            let e = CredentialFaultSettings::from_json(body.as_bytes()).unwrap_err();
            assert!(e.contains(needle), "{body}: {e}");
        }
    }

    #[test]
    fn bodies() {
        let garbled = garbled_body();
        assert!(std::str::from_utf8(&garbled).is_err());
        assert!(serde_json::from_slice::<serde_json::Value>(&garbled).is_err());

        let mut doc = serde_json::Map::new();
        doc.insert("Code".into(), "Success".into());
        let huge = huge_body(doc);
        assert_eq!(huge.len(), HUGE_BODY_BYTES);
        let v: serde_json::Value = serde_json::from_slice(&huge).unwrap();
        assert_eq!(v["Code"], "Success");
        assert!(v.get("AccessKeyId").is_none());

        assert_eq!(
            server_error_body(StatusCode::SERVICE_UNAVAILABLE),
            "503 Service Unavailable (fault injected by the HealthLake emulator)\n"
        );
    }

    #[test]
    fn the_queue_writes_credential_faults_as_text() {
        let mut inj = CredentialFaultInjector::default();
        inj.replace(
            CredentialFaultSettings::from_json(br#"{"next":["503","503","huge"]}"#).unwrap(),
        );
        assert_eq!(
            inj.take(),
            Some(CredentialFault::ServerError(
                StatusCode::SERVICE_UNAVAILABLE
            ))
        );
        assert_eq!(
            serde_json::to_value(inj.status()).unwrap(),
            serde_json::json!({"settings": {"next": ["503", "huge"]}, "injected": {"503": 1}})
        );
    }
}
