//! The JSON credentials the platforms hand out: the container credentials endpoint (ECS task
//! role, EKS Pod Identity agent) and EC2 instance metadata both answer
//! `{"AccessKeyId", "SecretAccessKey", "Token", "Expiration", ...}` (IMDS adds `"Code":
//! "Success"`); their errors are JSON `{"code"/"Code", "message"/"Message"}` or plain text.

use super::call::excerpt;
use super::Credentials;
use serde::Deserialize;

/// Largest answer read (real ones are about 1.5 KB): a bigger one is not credentials.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "Code", alias = "code")]
    code: Option<String>,
    #[serde(rename = "Message", alias = "message")]
    message: Option<String>,
    #[serde(rename = "AccessKeyId")]
    access_key_id: Option<String>,
    #[serde(rename = "SecretAccessKey")]
    secret_access_key: Option<String>,
    #[serde(rename = "Token")]
    token: Option<String>,
    #[serde(rename = "Expiration")]
    expiration: Option<String>,
}

/// Reads an answer. Errors say what was wrong, quoting an error answer's code and message (or
/// the start of a body that is not JSON), never a field of a successful one.
pub fn parse(status: u16, body: &[u8]) -> Result<Credentials, String> {
    if body.len() > MAX_ANSWER_BYTES {
        return Err(format!(
            "answered {status} with {} bytes, more than credentials take ({MAX_ANSWER_BYTES})",
            body.len()
        ));
    }
    let answer: Option<Answer> = serde_json::from_slice(body).ok();
    if !(200..300).contains(&status) {
        let why = match &answer {
            Some(a) if a.code.is_some() || a.message.is_some() => format!(
                "{} {}",
                a.code.as_deref().unwrap_or(""),
                a.message.as_deref().unwrap_or("")
            ),
            _ => excerpt(body),
        };
        return Err(format!("answered {status}: {}", why.trim()));
    }
    let Some(answer) = answer else {
        return Err(format!(
            "answered {status} with a body that is not JSON credentials ({} bytes)",
            body.len()
        ));
    };
    if let Some(code) = answer.code.as_deref().filter(|c| *c != "Success") {
        return Err(format!(
            "answered Code {code:?}: {}",
            answer.message.as_deref().unwrap_or("no message")
        ));
    }
    let present = |v: Option<String>, name: &str| {
        v.filter(|s| !s.trim().is_empty())
            .ok_or_else(|| format!("the answer has no {name}"))
    };
    let access_key_id = present(answer.access_key_id, "AccessKeyId")?;
    let secret_access_key = present(answer.secret_access_key, "SecretAccessKey")?;
    let token = present(answer.token, "Token")?;
    let expiration = present(answer.expiration, "Expiration")?;
    let expires_at = super::expiry(&expiration)
        .ok_or_else(|| format!("Expiration {expiration:?} is not an ISO-8601 time"))?;
    Ok(Credentials {
        access_key_id,
        secret_access_key,
        session_token: Some(token),
        expires_at: Some(expires_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    const POD_IDENTITY: &str = r#"{"AccessKeyId":"ASIAPODIDENTITY00001","SecretAccessKey":"c2VjcmV0","Token":"IQoJb3JpZ2lu","AccountId":"123456789012","Expiration":"2026-11-30T07:00:00Z"}"#;
    const IMDS: &str = r#"{
  "Code" : "Success",
  "LastUpdated" : "2026-11-30T01:00:00Z",
  "Type" : "AWS-HMAC",
  "AccessKeyId" : "ASIAINSTANCE00000001",
  "SecretAccessKey" : "instance-secret",
  "Token" : "instance-token",
  "Expiration" : "2026-11-30T07:00:00Z"
}"#;

    #[test]
    fn reads_both_platforms_answers() {
        let expiry = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_022_000);
        let c = parse(200, POD_IDENTITY.as_bytes()).unwrap();
        assert_eq!(c.access_key_id, "ASIAPODIDENTITY00001");
        assert_eq!(c.secret_access_key, "c2VjcmV0");
        assert_eq!(c.session_token.as_deref(), Some("IQoJb3JpZ2lu"));
        assert_eq!(c.expires_at, Some(expiry));
        let c = parse(200, IMDS.as_bytes()).unwrap();
        assert_eq!(c.access_key_id, "ASIAINSTANCE00000001");
        assert_eq!(c.expires_at, Some(expiry));
    }

    #[test]
    fn errors_say_why_without_quoting_credentials() {
        let e = parse(
            401,
            br#"{"code":"AccessDeniedException","message":"bad token"}"#,
        )
        .unwrap_err();
        assert_eq!(e, "answered 401: AccessDeniedException bad token");
        assert_eq!(
            parse(503, b"credentials endpoint down\n").unwrap_err(),
            "answered 503: credentials endpoint down"
        );
        // Only a message, only a code, or JSON without either.
        assert_eq!(
            parse(403, br#"{"Message":"not allowed"}"#).unwrap_err(),
            "answered 403: not allowed"
        );
        assert_eq!(
            parse(403, br#"{"Code":"Denied"}"#).unwrap_err(),
            "answered 403: Denied"
        );
        assert_eq!(parse(500, b"{}").unwrap_err(), "answered 500: {}");
        // The documented limit: 64 KiB.
        assert_eq!(MAX_ANSWER_BYTES, 65_536);
        let e = parse(200, IMDS.replace("Success", "Failure").as_bytes()).unwrap_err();
        assert!(e.starts_with("answered Code \"Failure\""), "{e}");
        let e = parse(200, b"<html>hello</html>").unwrap_err();
        assert_eq!(
            e,
            "answered 200 with a body that is not JSON credentials (18 bytes)"
        );
        // A 200 that is not credentials is never quoted: it could be a partial secret.
        let partial = r#"{"AccessKeyId":"ASIAX","SecretAccessKey":"s3cr3t"}"#;
        let e = parse(200, partial.as_bytes()).unwrap_err();
        assert_eq!(e, "the answer has no Token");
        assert!(!e.contains("s3cr3t"));
        let e = parse(
            200,
            POD_IDENTITY
                .replace("2026-11-30T07:00:00Z", "soon")
                .as_bytes(),
        )
        .unwrap_err();
        assert_eq!(e, "Expiration \"soon\" is not an ISO-8601 time");
        let e = parse(200, &vec![b' '; MAX_ANSWER_BYTES + 1]).unwrap_err();
        assert!(e.contains("more than credentials take"), "{e}");
        // Exactly the limit is still read.
        let mut padded = POD_IDENTITY.as_bytes().to_vec();
        padded.resize(MAX_ANSWER_BYTES, b' ');
        assert!(parse(200, &padded).is_ok());
        for blank in ["AccessKeyId", "SecretAccessKey", "Token", "Expiration"] {
            let v: serde_json::Value = serde_json::from_str(POD_IDENTITY).unwrap();
            let mut v = v.as_object().unwrap().clone();
            v.insert(blank.into(), serde_json::Value::String(" ".into()));
            let e = parse(200, &serde_json::to_vec(&v).unwrap()).unwrap_err();
            assert_eq!(e, format!("the answer has no {blank}"));
        }
    }
}
