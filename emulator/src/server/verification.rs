//! The SigV4 check of a data-plane request: the credential sets accepted (static, then issued by
//! STS, then by the IMDS and container endpoints), the verification itself, what the request log
//! says about the credential set a request named, and the `403` of a rejected request.

use std::borrow::Cow;
use std::time::SystemTime;

use http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::json;

use super::responses::{aws_error_response, response};
use super::{App, Resp, AWS_JSON, SERVICE};
use crate::credentials::IssuedBy;
use crate::sigv4::{self, Credential, Policy, Request as SignedRequest};

/// The canonical request with the session token's value replaced: the 403 body goes back to the
/// caller, which may log it.
fn redact_token_line(canonical_request: &str) -> String {
    canonical_request
        .split('\n')
        .map(|line| {
            if line.starts_with("x-amz-security-token:") {
                "x-amz-security-token:<redacted>"
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What the request log says about the credential set a request named.
#[derive(Clone, Debug, Default)]
pub(super) struct CredentialFacts {
    pub(super) source: Option<&'static str>,
    pub(super) expires_at: Option<SystemTime>,
    pub(super) valid: Option<bool>,
}

/// The credential sets the verifier accepts, and where each came from (`"static"`, `"sts"`,
/// `"imds"`, `"container"`), in the same order.
pub(super) struct Accepted<'a> {
    credentials: Cow<'a, [Credential]>,
    sources: Vec<&'static str>,
}

impl CredentialFacts {
    /// The facts about `access_key_id` among the accepted sets (the verifier takes the first set
    /// with the key, so does this).
    fn of(accepted: &Accepted<'_>, access_key_id: Option<&str>, now: SystemTime) -> Self {
        let Some(akid) = access_key_id else {
            return CredentialFacts::default();
        };
        match accepted
            .credentials
            .iter()
            .zip(&accepted.sources)
            .find(|(c, _)| c.access_key_id == akid)
        {
            Some((c, source)) => CredentialFacts {
                source: Some(source),
                expires_at: c.expires_at,
                valid: Some(!c.is_expired_at(now)),
            },
            None => CredentialFacts::default(),
        }
    }
}

/// The `403` of a request that failed verification: an expired token as AWS answers it, any
/// other failure with the canonical request and string to sign the verifier computed.
pub(super) fn rejection(e: &sigv4::VerifyError, verification: &sigv4::Verification) -> Resp {
    if e.reason == sigv4::Reason::ExpiredToken {
        // As AWS answers it: nothing to debug in the signature.
        aws_error_response(
            StatusCode::FORBIDDEN,
            e.reason.error_type(),
            &e.message,
            None,
        )
    } else {
        let mut body = serde_json::Map::new();
        body.insert("__type".into(), json!(e.reason.error_type()));
        body.insert("message".into(), json!(e.message));
        if let Some(c) = &verification.canonical_request {
            body.insert("canonicalRequest".into(), json!(redact_token_line(c)));
        }
        if let Some(s) = &verification.string_to_sign {
            body.insert("stringToSign".into(), json!(s));
        }
        response(
            StatusCode::FORBIDDEN,
            &[
                ("content-type", AWS_JSON.to_string()),
                ("x-amzn-errortype", e.reason.error_type().to_string()),
            ],
            serde_json::to_vec(&body).unwrap_or_default(),
        )
    }
}

impl App {
    /// The credential sets the verifier accepts: the static ones, then those STS issued, then
    /// those the IMDS and container endpoints issued (the verifier takes the first set with a
    /// key id, so a static set wins a clash).
    fn accepted_credentials(&self) -> Accepted<'_> {
        let state = self.lock();
        let mut sources = vec!["static"; self.config.credentials.len()];
        if state.sts.is_empty() && state.credentials.is_empty() {
            return Accepted {
                credentials: Cow::Borrowed(self.config.credentials.as_slice()),
                sources,
            };
        }
        let mut all = self.config.credentials.clone();
        for c in state.sts.credentials() {
            all.push(c.clone());
            sources.push(IssuedBy::Sts.as_str());
        }
        for (c, source) in state.credentials.credentials() {
            all.push(c.clone());
            sources.push(source.as_str());
        }
        Accepted {
            credentials: Cow::Owned(all),
            sources,
        }
    }

    pub(super) fn verify(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> (sigv4::Verification, CredentialFacts) {
        let header_list: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        let signed = SignedRequest {
            method: method.as_str(),
            path: uri.path(),
            query: uri.query().unwrap_or_default(),
            headers: &header_list,
            body,
        };
        let accepted = self.accepted_credentials();
        let policy = Policy {
            region: &self.config.region,
            service: SERVICE,
            credentials: &accepted.credentials,
            now,
            max_skew: self.config.max_skew,
            normalize_path: true,
        };
        let verification = sigv4::verify(&signed, &policy);
        let facts = CredentialFacts::of(&accepted, verification.access_key_id.as_deref(), now);
        (verification, facts)
    }
}
