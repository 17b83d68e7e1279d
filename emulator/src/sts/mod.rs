//! Temporary credentials issued by AWS STS (in tests, moto), learnt by standing in the path as a
//! recording proxy.
//!
//! - [`faults`]: the faults tests ask the proxy to inject into `AssumeRole` calls.
//! - [`proxy`]: the second listener (`--sts-upstream`), forwarding every request unchanged to the
//!   upstream STS and its answer unchanged back.
//! - [`xml`]: reading the credentials of a successful answer and the code of an error answer.
//! - [`web_identity`]: the `WebIdentityToken` check of `AssumeRoleWithWebIdentity` calls
//!   (`--web-identity-token-file`).
//! - [`StsLedger`]: what the proxy saw (the call log) and the credential sets STS issued, with
//!   their expiry; the verifier accepts those sets until they expire.

pub mod faults;
pub mod proxy;
pub mod web_identity;
pub mod xml;

use std::time::SystemTime;

use serde::Serialize;

use crate::sigv4::{self, Credential};
use crate::timefmt;

/// The STS actions whose successful answer carries a credential set
/// (`{Action}Response/{Action}Result/Credentials`).
pub const CREDENTIAL_ACTIONS: [&str; 6] = [
    "AssumeRole",
    "AssumeRoleWithWebIdentity",
    "AssumeRoleWithSAML",
    "AssumeRoot",
    "GetSessionToken",
    "GetFederationToken",
];

/// One call through the STS proxy, as listed by `GET /_emulator/sts`. Secrets and session tokens
/// are never recorded.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct StsCall {
    /// 1, 2, ... in the order the answers came back.
    pub seq: u64,
    /// When the call was recorded (its answer came back), RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The `Action` of the form body (or, failing that, of the query string).
    pub action: Option<String>,
    /// The status the caller was answered: the upstream's, or the proxy's own `502`/`504`/`413`.
    pub status: u16,
    /// The access key id of the credential set the answer issued, once accepted.
    pub issued_access_key_id: Option<String>,
    /// Its `Expiration`, exactly as STS wrote it.
    pub expiration: Option<String>,
    /// The `Code` of an error answer (`ErrorResponse/Error/Code`).
    pub error_code: Option<String>,
    /// Why the proxy could not forward the call, or could not read the credentials of a
    /// successful answer; null otherwise.
    pub proxy_error: Option<String>,
    /// The STS fault injected into this call (`"garbled"`, `"expired"`, `"503"`, ...), or null.
    pub fault: Option<String>,
    /// For a call carrying a `WebIdentityToken`: the first 12 hex digits of the token's SHA-256
    /// (the token itself is never recorded); null otherwise.
    pub web_identity_token_sha256_prefix: Option<String>,
}

/// What the proxy notes about a call besides its answer.
#[derive(Clone, Copy, Debug, Default)]
pub struct CallNotes<'a> {
    /// The STS fault injected into the call.
    pub fault: Option<&'a faults::StsFault>,
    /// The SHA-256 prefix of the call's `WebIdentityToken`.
    pub web_identity_token_sha256_prefix: Option<&'a str>,
}

/// An issued credential set, as listed by `GET /_emulator/sts`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct IssuedStatus {
    pub access_key_id: String,
    /// Exactly as STS wrote it.
    pub expiration: String,
    /// When the set stops being accepted, RFC 3339 UTC with milliseconds: the expiration, or the
    /// moment of an earlier `POST /_emulator/sts/expire`.
    pub expires_at: String,
    pub expired: bool,
}

/// The body of `GET /_emulator/sts`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct StsStatus {
    pub calls: Vec<StsCall>,
    pub issued: Vec<IssuedStatus>,
}

/// What became of a call the proxy forwarded.
#[derive(Clone, Copy, Debug)]
pub enum UpstreamOutcome<'a> {
    /// The upstream answered (this status, this body).
    Answered { status: u16, body: &'a [u8] },
    /// The proxy answered this status itself, for this reason (upstream unreachable, timed out,
    /// request body unreadable).
    Failed { status: u16, error: &'a str },
}

#[derive(Clone, Debug)]
struct Issued {
    /// With `expires_at` set.
    credential: Credential,
    expiration: String,
}

/// The call log and the issued credential sets.
#[derive(Debug, Default)]
pub struct StsLedger {
    calls: Vec<StsCall>,
    seq: u64,
    issued: Vec<Issued>,
}

/// The `Action` parameter of an STS call: from the form body, else from the query string.
pub fn action_of(query: Option<&str>, body: &[u8]) -> Option<String> {
    param_of("Action", query, body)
}

/// A parameter of an STS call (AWS query protocol), percent-decoded: from the form body, else
/// from the query string; `None` when absent or empty.
pub fn param_of(name: &str, query: Option<&str>, body: &[u8]) -> Option<String> {
    let find = |text: &str| {
        text.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (sigv4::form_decode(k) == name.as_bytes())
                .then(|| String::from_utf8_lossy(&sigv4::form_decode(v)).into_owned())
        })
    };
    std::str::from_utf8(body)
        .ok()
        .and_then(find)
        .or_else(|| query.and_then(find))
        .filter(|a| !a.is_empty())
}

impl StsLedger {
    /// Records a call and, for a successful credential-issuing answer, accepts the credential
    /// set it carries until its expiration (a set with an access key id issued before replaces
    /// the earlier one). Returns the record.
    pub fn record(
        &mut self,
        action: Option<&str>,
        outcome: UpstreamOutcome<'_>,
        now: SystemTime,
    ) -> StsCall {
        self.record_with_fault(action, outcome, now, None)
    }

    /// [`StsLedger::record`], noting the STS fault injected into the call, if any. `outcome` is
    /// what the ledger reads: for a fault that rewrote the upstream's answer, the answer it
    /// should learn the credentials from.
    pub fn record_with_fault(
        &mut self,
        action: Option<&str>,
        outcome: UpstreamOutcome<'_>,
        now: SystemTime,
        fault: Option<&faults::StsFault>,
    ) -> StsCall {
        let notes = CallNotes {
            fault,
            ..CallNotes::default()
        };
        self.record_noted(action, outcome, now, notes)
    }

    /// [`StsLedger::record`], with what the proxy noted about the call.
    pub fn record_noted(
        &mut self,
        action: Option<&str>,
        outcome: UpstreamOutcome<'_>,
        now: SystemTime,
        notes: CallNotes<'_>,
    ) -> StsCall {
        self.seq = self.seq.saturating_add(1);
        let mut call = StsCall {
            seq: self.seq,
            time: timefmt::format_rfc3339_millis(now),
            action: action.map(str::to_string),
            status: 0,
            issued_access_key_id: None,
            expiration: None,
            error_code: None,
            proxy_error: None,
            fault: notes.fault.map(ToString::to_string),
            web_identity_token_sha256_prefix: notes
                .web_identity_token_sha256_prefix
                .map(str::to_string),
        };
        match outcome {
            UpstreamOutcome::Failed { status, error } => {
                call.status = status;
                call.proxy_error = Some(error.to_string());
            }
            UpstreamOutcome::Answered { status, body } => {
                call.status = status;
                if status == 200 {
                    if let Some(action) = action.filter(|a| CREDENTIAL_ACTIONS.contains(a)) {
                        match read_issued(body, action) {
                            Ok(issued) => {
                                call.issued_access_key_id =
                                    Some(issued.credential.access_key_id.clone());
                                call.expiration = Some(issued.expiration.clone());
                                self.issued.retain(|i| {
                                    i.credential.access_key_id != issued.credential.access_key_id
                                });
                                self.issued.push(issued);
                            }
                            Err(e) => {
                                call.proxy_error = Some(format!(
                                    "could not read the credentials of the {action} answer: {e}"
                                ));
                            }
                        }
                    }
                } else {
                    call.error_code = xml::parse_error_code(body);
                }
            }
        }
        self.calls.push(call.clone());
        call
    }

    /// True when no credential set was issued.
    pub fn is_empty(&self) -> bool {
        self.issued.is_empty()
    }

    /// The issued credential sets, in the order they were issued.
    pub fn credentials(&self) -> impl Iterator<Item = &Credential> {
        self.issued.iter().map(|i| &i.credential)
    }

    /// The call log and the issued sets, as `GET /_emulator/sts` shows them.
    pub fn status(&self, now: SystemTime) -> StsStatus {
        StsStatus {
            calls: self.calls.clone(),
            issued: self
                .issued
                .iter()
                .map(|i| IssuedStatus {
                    access_key_id: i.credential.access_key_id.clone(),
                    expiration: i.expiration.clone(),
                    expires_at: i
                        .credential
                        .expires_at
                        .map(timefmt::format_rfc3339_millis)
                        .unwrap_or_default(),
                    expired: i.credential.is_expired_at(now),
                })
                .collect(),
        }
    }

    /// The issued sets with STS's `Expiration` text, in the order issued (for a state file;
    /// these carry secrets and session tokens).
    pub fn issued_sets(&self) -> impl Iterator<Item = (&Credential, &str)> {
        self.issued
            .iter()
            .map(|i| (&i.credential, i.expiration.as_str()))
    }

    /// Accepts a set issued before (loaded from a state file) until its `expires_at`, which may
    /// be earlier than `expiration` after `POST /_emulator/sts/expire`. Replaces a set with the
    /// same access key id. A set without `expires_at` is not restored (it never expires, which
    /// an STS-issued set must).
    pub fn restore_issued(&mut self, credential: Credential, expiration: String) -> bool {
        if credential.expires_at.is_none() {
            return false;
        }
        self.issued
            .retain(|i| i.credential.access_key_id != credential.access_key_id);
        self.issued.push(Issued {
            credential,
            expiration,
        });
        true
    }

    /// Makes every issued set that has not expired yet expire at `now`; returns how many.
    pub fn expire_all(&mut self, now: SystemTime) -> usize {
        let mut n = 0;
        for i in &mut self.issued {
            if !i.credential.is_expired_at(now) {
                i.credential.expires_at = Some(now);
                n += 1;
            }
        }
        n
    }
}

fn read_issued(body: &[u8], action: &str) -> Result<Issued, String> {
    let c = xml::parse_credentials(body, action)?;
    let expires_at = timefmt::parse_iso8601(&c.expiration).ok_or_else(|| {
        format!(
            "Expiration '{}' is not an ISO-8601 timestamp with a UTC offset",
            c.expiration
        )
    })?;
    Ok(Issued {
        credential: Credential::new(c.access_key_id, c.secret_access_key, Some(c.session_token))
            .expiring_at(expires_at),
        expiration: c.expiration,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn answer(akid: &str, expiration: &str) -> String {
        format!(
            "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleResult><Credentials><AccessKeyId>{akid}</AccessKeyId><SecretAccessKey>s3cr3t</SecretAccessKey><SessionToken>t0k3n</SessionToken><Expiration>{expiration}</Expiration></Credentials></AssumeRoleResult></AssumeRoleResponse>"
        )
    }

    #[test]
    fn finds_the_action() {
        assert_eq!(
            action_of(
                None,
                b"Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws"
            )
            .as_deref(),
            Some("AssumeRole")
        );
        assert_eq!(
            action_of(Some("Version=1&Action=GetCallerIdentity"), b"").as_deref(),
            Some("GetCallerIdentity")
        );
        assert_eq!(
            action_of(Some("Action=Q"), b"%41ction=Assume%52ole").as_deref(),
            Some("AssumeRole")
        );
        assert_eq!(action_of(None, b"{\"Action\":1}"), None);
        assert_eq!(action_of(None, b"Action="), None);
    }

    #[test]
    fn records_calls_and_keeps_issued_sets() {
        let t0 = timefmt::unix_to_system_time(1_795_816_800); // 2026-11-27T22:00:00Z
        let mut ledger = StsLedger::default();
        let body = answer("ASIAONE", "2026-11-27T23:00:00Z");
        let call = ledger.record(
            Some("AssumeRole"),
            UpstreamOutcome::Answered {
                status: 200,
                body: body.as_bytes(),
            },
            t0,
        );
        assert_eq!(call.seq, 1);
        assert_eq!(call.time, "2026-11-27T22:00:00.000Z");
        assert_eq!(call.issued_access_key_id.as_deref(), Some("ASIAONE"));
        assert_eq!(call.expiration.as_deref(), Some("2026-11-27T23:00:00Z"));
        assert_eq!((call.error_code, call.proxy_error), (None, None));
        let cred = ledger.credentials().next().unwrap().clone();
        assert_eq!(cred.session_token.as_deref(), Some("t0k3n"));
        assert_eq!(cred.secret_access_key, "s3cr3t");
        let json = serde_json::to_string(&ledger.status(t0)).unwrap();
        assert!(
            !json.contains("s3cr3t") && !json.contains("t0k3n"),
            "{json}"
        );

        // An error answer, a 200 of another action, an unreadable 200, a proxy failure.
        let call = ledger.record(
            Some("AssumeRole"),
            UpstreamOutcome::Answered {
                status: 403,
                body: b"<ErrorResponse><Error><Code>AccessDenied</Code></Error></ErrorResponse>",
            },
            t0,
        );
        assert_eq!(call.error_code.as_deref(), Some("AccessDenied"));
        let call = ledger.record(
            Some("GetCallerIdentity"),
            UpstreamOutcome::Answered {
                status: 200,
                body: b"<GetCallerIdentityResponse/>",
            },
            t0,
        );
        assert_eq!((call.issued_access_key_id, call.proxy_error), (None, None));
        let bad = answer("ASIABAD", "tomorrow");
        let call = ledger.record(
            Some("AssumeRole"),
            UpstreamOutcome::Answered {
                status: 200,
                body: bad.as_bytes(),
            },
            t0,
        );
        assert_eq!(call.issued_access_key_id, None);
        assert!(
            call.proxy_error.as_deref().unwrap().contains("'tomorrow'"),
            "{call:?}"
        );
        let call = ledger.record(
            None,
            UpstreamOutcome::Failed {
                status: 502,
                error: "connection refused",
            },
            t0,
        );
        assert_eq!(
            (call.seq, call.status, call.proxy_error.as_deref()),
            (5, 502, Some("connection refused"))
        );

        // Issuing the same key again replaces the set.
        let again = answer("ASIAONE", "2026-11-28T00:00:00.000+00:00");
        ledger.record(
            Some("AssumeRole"),
            UpstreamOutcome::Answered {
                status: 200,
                body: again.as_bytes(),
            },
            t0,
        );
        let status = ledger.status(t0);
        assert_eq!(status.calls.len(), 6);
        assert_eq!(status.issued.len(), 1);
        assert_eq!(
            status.issued[0],
            IssuedStatus {
                access_key_id: "ASIAONE".into(),
                expiration: "2026-11-28T00:00:00.000+00:00".into(),
                expires_at: "2026-11-28T00:00:00.000Z".into(),
                expired: false,
            }
        );
        assert!(ledger.status(t0 + Duration::from_secs(7200)).issued[0].expired);

        // Early expiry.
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(ledger.expire_all(t1), 1);
        assert_eq!(ledger.expire_all(t1), 0);
        let status = ledger.status(t1);
        assert!(status.issued[0].expired);
        assert_eq!(status.issued[0].expires_at, "2026-11-27T22:01:00.000Z");
        assert!(!ledger.status(t0).issued[0].expired);
    }
}
