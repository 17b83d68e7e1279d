//! STS `AssumeRole` on top of the base credentials (Smile CDR's `role.arn`): the signed call
//! (SigV4, service `sts`, signed with the base credentials, which may be temporary themselves).
//! The answer is read by [`super::sts_answer`].

use super::call::Call;
use super::Credentials;
use crate::signing::{sign_request, SigningError, SigningInput};
use sha2::{Digest, Sha256};
use std::time::SystemTime;

/// The SigV4 service name of STS.
pub const STS_SERVICE: &str = "sts";

/// The content type of an STS call's form body.
pub const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// How to assume the role (validated by `config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRole {
    pub role_arn: String,
    pub session_name: String,
    pub external_id: Option<String>,
    pub duration_seconds: u32,
    /// The Envoy cluster that reaches STS.
    pub cluster: String,
    /// The `:authority` of STS, e.g. `sts.us-east-1.amazonaws.com`.
    pub host: String,
}

/// `name=value&...`, each value form-encoded.
pub fn form(params: &[(&str, &str)]) -> String {
    let mut body = String::with_capacity(256);
    for (i, (name, value)) in params.iter().enumerate() {
        if i > 0 {
            body.push('&');
        }
        body.push_str(name);
        body.push('=');
        crate::percent::encode_into(&mut body, value);
    }
    body
}

/// The form body of the call.
pub fn form_body(role: &AssumeRole) -> String {
    let duration = role.duration_seconds.to_string();
    let mut params = vec![
        ("Action", "AssumeRole"),
        ("Version", "2011-06-15"),
        ("RoleArn", role.role_arn.as_str()),
        ("RoleSessionName", role.session_name.as_str()),
        ("DurationSeconds", duration.as_str()),
    ];
    if let Some(id) = &role.external_id {
        params.push(("ExternalId", id.as_str()));
    }
    form(&params)
}

/// Builds the signed AssumeRole call.
pub fn call(
    role: &AssumeRole,
    region: &str,
    base: &Credentials,
    now: SystemTime,
) -> Result<Call, SigningError> {
    let body = form_body(role).into_bytes();
    let hash = hex::encode(Sha256::digest(&body));
    let input = SigningInput {
        method: "POST",
        host: &role.host,
        path: "/",
        content_type: Some(FORM),
        payload_sha256: &hash,
        region,
        service: STS_SERVICE,
        time: now,
    };
    let signed = sign_request(&input, base)?;
    let mut call = Call::new(&role.cluster, "POST", &role.host, "/").header("content-type", FORM);
    call.headers.extend(signed);
    call.body = body;
    Ok(call)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn role() -> AssumeRole {
        AssumeRole {
            role_arn: "arn:aws:iam::123456789012:role/healthlake-relay".into(),
            session_name: "relay-host1".into(),
            external_id: Some("ext id/1".into()),
            duration_seconds: 3600,
            cluster: "sts".into(),
            host: "sts.us-east-1.amazonaws.com".into(),
        }
    }

    #[test]
    fn form_body_is_encoded() {
        assert_eq!(
            form_body(&role()),
            "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fhealthlake-relay\
             &RoleSessionName=relay-host1&DurationSeconds=3600&ExternalId=ext%20id%2F1"
        );
        let mut r = role();
        r.external_id = None;
        assert!(!form_body(&r).contains("ExternalId"));
    }

    #[test]
    fn call_is_signed_for_sts_with_the_base_credentials() {
        let base = Credentials {
            access_key_id: "AKIDBASE".into(),
            secret_access_key: "secret".into(),
            session_token: Some("base-token".into()),
            expires_at: None,
        };
        let c = call(
            &role(),
            "us-east-1",
            &base,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
        .unwrap();
        let get = |n: &str| c.get(n);
        assert_eq!(c.cluster, "sts");
        assert_eq!(get(":method"), Some("POST"));
        assert_eq!(get(":authority"), Some("sts.us-east-1.amazonaws.com"));
        assert_eq!(get("x-amz-security-token"), Some("base-token"));
        assert_eq!(
            get("x-amz-content-sha256"),
            Some(hex::encode(Sha256::digest(&c.body)).as_str())
        );
        let auth = get("authorization").unwrap();
        assert!(
            auth.contains("Credential=AKIDBASE/20231114/us-east-1/sts/aws4_request"),
            "{auth}"
        );
        assert!(c.body.starts_with(b"Action=AssumeRole&"));
    }
}
