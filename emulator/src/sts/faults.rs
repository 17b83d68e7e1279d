//! Faults of the STS recording proxy (`PUT /_emulator/sts/faults`): one `next` entry is consumed
//! per `AssumeRole` call on the STS listener, and makes STS answer in a way the relay must
//! survive. Some entries answer without calling the upstream (a canned answer); the others
//! forward the call and rewrite the upstream's answer.

use std::fmt;
use std::time::{Duration, SystemTime};

use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::faults::queue::{FaultQueue, FaultQueueSettings, FaultQueueStatus};
use crate::faults::SplitMix64;
use crate::timefmt;

/// The `Expiration` written by `bad-expiration`.
pub const BAD_EXPIRATION: &str = "not-a-date";

/// How far in the past `expired` puts the `Expiration`.
pub const EXPIRED_AGO: Duration = Duration::from_secs(3600);

/// The size of the body of a `huge` answer, in bytes.
pub const HUGE_BODY_BYTES: usize = 2_000_000;

/// The size of the body of a `garbled` answer, in bytes.
pub const GARBLED_BODY_BYTES: usize = 1024;

/// The STS API namespace of the answers.
const STS_NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// One STS fault.
///
/// Written as text (in `next` and in the STS call log's `fault` field) as `"garbled"`,
/// `"no-credentials"`, `"bad-expiration"`, `"expired"`, `"huge"` and `"500"`..`"599"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum StsFault {
    /// `200`, `text/xml`, a body that is not XML (nor UTF-8); no upstream call.
    Garbled,
    /// `200`, an `AssumeRoleResponse` with an `AssumeRoleResult` but no `Credentials`; no
    /// upstream call.
    NoCredentials,
    /// The upstream's answer with `Expiration` replaced by [`BAD_EXPIRATION`]; the set is
    /// accepted with its real expiry.
    BadExpiration,
    /// The upstream's answer with `Expiration` one hour in the past; the set is accepted as
    /// already expired.
    Expired,
    /// `200`, a well-formed `AssumeRoleResponse` without credentials padded to
    /// [`HUGE_BODY_BYTES`]; no upstream call.
    Huge,
    /// That 5xx status with an AWS XML `ErrorResponse`; no upstream call.
    ServerError(StatusCode),
}

/// The proxy's own answer for a fault that does not call the upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CannedAnswer {
    pub status: StatusCode,
    /// Always `text/xml`, as STS answers.
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl StsFault {
    /// Parses a `next` entry.
    pub fn parse(s: &str) -> Result<StsFault, String> {
        match s {
            "garbled" => return Ok(StsFault::Garbled),
            "no-credentials" => return Ok(StsFault::NoCredentials),
            "bad-expiration" => return Ok(StsFault::BadExpiration),
            "expired" => return Ok(StsFault::Expired),
            "huge" => return Ok(StsFault::Huge),
            _ => {}
        }
        if s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse::<u16>()
                .ok()
                .filter(|c| (500..=599).contains(c))
                .and_then(|c| StatusCode::from_u16(c).ok())
                .map(StsFault::ServerError)
                .ok_or_else(|| format!("\"{s}\": an STS fault status must be 500..599"));
        }
        Err(format!(
            "unknown STS fault \"{s}\": expected \"garbled\", \"no-credentials\", \
             \"bad-expiration\", \"expired\", \"huge\" or \"500\"..\"599\""
        ))
    }

    /// Whether the call still goes to the upstream (and its answer is rewritten).
    pub fn calls_upstream(&self) -> bool {
        matches!(self, StsFault::BadExpiration | StsFault::Expired)
    }

    /// The answer of a fault that does not call the upstream; `None` for the others.
    /// `request_id` goes into the answer's `RequestId`.
    pub fn canned_answer(&self, request_id: &str) -> Option<CannedAnswer> {
        let ok = |body: Vec<u8>| CannedAnswer {
            status: StatusCode::OK,
            content_type: "text/xml",
            body,
        };
        match *self {
            StsFault::Garbled => Some(ok(garbled_body())),
            StsFault::NoCredentials => Some(ok(no_credentials_xml(request_id, "").into_bytes())),
            StsFault::Huge => Some(ok(huge_xml(request_id))),
            StsFault::ServerError(status) => Some(CannedAnswer {
                status,
                content_type: "text/xml",
                body: error_xml(status, request_id).into_bytes(),
            }),
            StsFault::BadExpiration | StsFault::Expired => None,
        }
    }

    /// The `Expiration` this fault writes into an upstream answer received at `now`, and
    /// whether the rewritten answer (rather than the upstream's) is what the ledger reads.
    /// `None` for a fault that does not call the upstream.
    pub fn expiration_rewrite(&self, now: SystemTime) -> Option<(String, bool)> {
        match self {
            StsFault::BadExpiration => Some((BAD_EXPIRATION.to_string(), false)),
            StsFault::Expired => {
                let past = now
                    .checked_sub(EXPIRED_AGO)
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                Some((timefmt::format_rfc3339_seconds(past), true))
            }
            _ => None,
        }
    }
}

impl fmt::Display for StsFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StsFault::Garbled => f.write_str("garbled"),
            StsFault::NoCredentials => f.write_str("no-credentials"),
            StsFault::BadExpiration => f.write_str("bad-expiration"),
            StsFault::Expired => f.write_str("expired"),
            StsFault::Huge => f.write_str("huge"),
            StsFault::ServerError(status) => write!(f, "{}", status.as_u16()),
        }
    }
}

impl TryFrom<String> for StsFault {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        StsFault::parse(&s)
    }
}

impl From<StsFault> for String {
    fn from(f: StsFault) -> String {
        f.to_string()
    }
}

/// Bytes that look random, are not UTF-8 (the second byte is `0xff`) and are not XML (the first
/// is not `<`, whitespace or a byte-order mark).
fn garbled_body() -> Vec<u8> {
    let mut rng = SplitMix64::new(0x5354_535f_4741_5242);
    let mut body = vec![0x8f, 0xff, 0x00, 0xc3, 0x28];
    while body.len() < GARBLED_BODY_BYTES {
        body.extend(rng.next_u64().to_le_bytes());
    }
    body.truncate(GARBLED_BODY_BYTES);
    body
}

/// An `AssumeRoleResponse` with an `AssumeRoleResult` (the assumed role user only) and no
/// `Credentials`; `padding` goes in a comment inside the result.
fn no_credentials_xml(request_id: &str, padding: &str) -> String {
    let comment = if padding.is_empty() {
        String::new()
    } else {
        format!("\n    <!-- {padding} -->")
    };
    format!(
        "<AssumeRoleResponse xmlns=\"{STS_NAMESPACE}\">\n  <AssumeRoleResult>\n    \
         <AssumedRoleUser>\n      <AssumedRoleId>AROAEMULATORFAULT0000:relay</AssumedRoleId>\n      \
         <Arn>arn:aws:sts::123456789012:assumed-role/healthlake-emulator/relay</Arn>\n    \
         </AssumedRoleUser>{comment}\n  </AssumeRoleResult>\n  <ResponseMetadata>\n    \
         <RequestId>{request_id}</RequestId>\n  </ResponseMetadata>\n</AssumeRoleResponse>\n"
    )
}

/// [`no_credentials_xml`] padded with a comment to exactly [`HUGE_BODY_BYTES`].
fn huge_xml(request_id: &str) -> Vec<u8> {
    const FILLER: &str = "This STS answer is padded to make it huge. ";
    let bare = no_credentials_xml(request_id, "x");
    let room = HUGE_BODY_BYTES.saturating_sub(bare.len()).saturating_add(1);
    let padding: String = FILLER.chars().cycle().take(room).collect();
    no_credentials_xml(request_id, &padding).into_bytes()
}

/// An STS `ErrorResponse` for a 5xx status.
fn error_xml(status: StatusCode, request_id: &str) -> String {
    let code = if status == StatusCode::INTERNAL_SERVER_ERROR {
        "InternalFailure"
    } else {
        "ServiceUnavailable"
    };
    let reason = status.canonical_reason().unwrap_or("Server error");
    format!(
        "<ErrorResponse xmlns=\"{STS_NAMESPACE}\">\n  <Error>\n    <Type>Receiver</Type>\n    \
         <Code>{code}</Code>\n    <Message>{reason} (fault injected by the HealthLake \
         emulator)</Message>\n  </Error>\n  <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n"
    )
}

/// The answer `xml` with the text of its first `<Expiration>` element replaced by
/// `expiration`; `None` when it has none.
pub fn rewrite_expiration(xml: &[u8], expiration: &str) -> Option<Vec<u8>> {
    const OPEN: &[u8] = b"<Expiration>";
    const CLOSE: &[u8] = b"</Expiration>";
    let start = find(xml, OPEN, 0)?.checked_add(OPEN.len())?;
    let end = find(xml, CLOSE, start)?;
    let mut out = Vec::with_capacity(xml.len().saturating_add(expiration.len()));
    out.extend_from_slice(xml.get(..start)?);
    out.extend_from_slice(expiration.as_bytes());
    out.extend_from_slice(xml.get(end..)?);
    Some(out)
}

/// The position of the first `needle` in `haystack` at or after `from`.
fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .and_then(|p| p.checked_add(from))
}

/// What `PUT /_emulator/sts/faults` takes: `next`, faults for the next `AssumeRole` calls.
pub type StsFaultSettings = FaultQueueSettings<StsFault>;

/// The answer of `GET /_emulator/sts/faults`.
pub type StsFaultStatus = FaultQueueStatus<StsFault>;

/// The STS fault queue and its counters.
pub type StsFaultInjector = FaultQueue<StsFault>;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::sts::xml;

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
            assert_eq!(StsFault::parse(s).unwrap().to_string(), s);
        }
        for (s, needle) in [
            ("499", "500..599"),
            ("600", "500..599"),
            ("403", "500..599"),
            ("5000", "unknown STS fault"),
            ("reset", "unknown STS fault"),
            ("", "unknown STS fault"),
            ("Huge", "unknown STS fault"),
        ] {
            let e = StsFault::parse(s).unwrap_err();
            assert!(e.contains(needle), "{s}: {e}");
        }
        assert!(StsFault::Expired.calls_upstream() && StsFault::BadExpiration.calls_upstream());
        assert!(!StsFault::Huge.calls_upstream());
    }

    #[test]
    fn settings_take_sts_faults() {
        let s = StsFaultSettings::from_json(br#"{"next":["expired","503"]}"#).unwrap();
        assert_eq!(
            s.next,
            [
                StsFault::Expired,
                StsFault::ServerError(StatusCode::SERVICE_UNAVAILABLE)
            ]
        );
        for (body, needle) in [
            (r#"{"next":["teapot"]}"#, "unknown STS fault \"teapot\""),
            (r#"{"next":["429"]}"#, "500..599"),
        ] {
            let e = StsFaultSettings::from_json(body.as_bytes()).unwrap_err();
            assert!(e.contains(needle), "{body}: {e}");
        }
    }

    #[test]
    fn canned_answers() {
        let garbled = StsFault::Garbled.canned_answer("r").unwrap();
        assert_eq!(garbled.status, StatusCode::OK);
        assert_eq!(garbled.body.len(), GARBLED_BODY_BYTES);
        assert!(std::str::from_utf8(&garbled.body).is_err());
        assert!(xml::parse_credentials(&garbled.body, "AssumeRole").is_err());
        assert_eq!(garbled.body, garbled_body());

        let none = StsFault::NoCredentials.canned_answer("req-1").unwrap();
        assert_eq!(
            (none.status, none.content_type),
            (StatusCode::OK, "text/xml")
        );
        let e = xml::parse_credentials(&none.body, "AssumeRole").unwrap_err();
        assert!(
            e.contains("has no AssumeRoleResponse/AssumeRoleResult/Credentials"),
            "{e}"
        );
        let text = String::from_utf8(none.body).unwrap();
        assert!(text.contains("<AssumeRoleResult>") && !text.contains("Credentials"));
        assert!(text.contains("<RequestId>req-1</RequestId>"));

        let huge = StsFault::Huge.canned_answer("req-2").unwrap();
        assert_eq!(huge.body.len(), HUGE_BODY_BYTES);
        let e = xml::parse_credentials(&huge.body, "AssumeRole").unwrap_err();
        assert!(e.contains("has no"), "{e}");

        let error = StsFault::ServerError(StatusCode::SERVICE_UNAVAILABLE)
            .canned_answer("req-3")
            .unwrap();
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            xml::parse_error_code(&error.body).as_deref(),
            Some("ServiceUnavailable")
        );
        let error = StsFault::ServerError(StatusCode::INTERNAL_SERVER_ERROR)
            .canned_answer("req-4")
            .unwrap();
        assert_eq!(
            xml::parse_error_code(&error.body).as_deref(),
            Some("InternalFailure")
        );
        assert!(StsFault::Expired.canned_answer("r").is_none());
    }

    #[test]
    fn rewrites_the_expiration() {
        let xml = b"<A><Credentials><SessionToken>t</SessionToken><Expiration>2026-11-27T23:00:00Z</Expiration></Credentials></A>";
        assert_eq!(
            rewrite_expiration(xml, "not-a-date").unwrap(),
            b"<A><Credentials><SessionToken>t</SessionToken><Expiration>not-a-date</Expiration></Credentials></A>"
        );
        assert_eq!(rewrite_expiration(b"<A><Expiration/></A>", "x"), None);
        assert_eq!(rewrite_expiration(b"<Expiration>open", "x"), None);
        let now = timefmt::unix_to_system_time(1_795_816_800);
        assert_eq!(
            StsFault::Expired.expiration_rewrite(now),
            Some(("2026-11-27T21:00:00Z".to_string(), true))
        );
        assert_eq!(
            StsFault::BadExpiration.expiration_rewrite(now),
            Some(("not-a-date".to_string(), false))
        );
        assert_eq!(StsFault::Huge.expiration_rewrite(now), None);
    }

    #[test]
    fn the_queue_writes_sts_faults_as_text() {
        let mut inj = StsFaultInjector::default();
        inj.replace(StsFaultSettings::from_json(br#"{"next":["503","503","huge"]}"#).unwrap());
        assert_eq!(
            inj.take(),
            Some(StsFault::ServerError(StatusCode::SERVICE_UNAVAILABLE))
        );
        assert_eq!(
            serde_json::to_value(inj.status()).unwrap(),
            serde_json::json!({"settings": {"next": ["503", "huge"]}, "injected": {"503": 1}})
        );
    }
}
