//! The XML answer of STS (`AssumeRole`, `AssumeRoleWithWebIdentity`): the temporary credentials
//! of `{Action}Response/{Action}Result/Credentials`, or the `ErrorResponse`'s code and message.

use super::call::excerpt;
use super::Credentials;
use quick_xml::events::Event;
use quick_xml::Reader;
use std::fmt;

/// Why STS gave no credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsError {
    /// STS's error code (`AccessDenied`, `ExpiredToken`, ...), or a description of what was wrong
    /// with the answer.
    pub code: String,
    pub message: String,
    pub status: u16,
}

impl fmt::Display for StsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "STS answered {} {}: {}",
            self.status, self.code, self.message
        )
    }
}

/// The text of the elements an STS answer carries, by local name.
#[derive(Default)]
struct Fields {
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    expiration: Option<String>,
    code: Option<String>,
    message: Option<String>,
}

/// The text an entity or character reference stands for: quick-xml resolves both (the five
/// predefined entities, `&#...;` and `&#x...;`); anything else is not an STS document.
fn resolve(reference: &quick_xml::events::BytesRef<'_>) -> Result<String, String> {
    if let Some(c) = reference
        .resolve_char_ref()
        .map_err(|e| format!("a bad character reference ({e})"))?
    {
        return Ok(c.to_string());
    }
    let name = reference.xml10_content();
    quick_xml::escape::resolve_predefined_entity(&name)
        .map(str::to_owned)
        .ok_or_else(|| "an unknown XML entity".to_owned())
}

fn read_fields(xml: &str) -> Result<Fields, String> {
    let mut reader = Reader::from_str(xml);
    let mut fields = Fields::default();
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                path.push(e.local_name().as_ref().to_owned());
                text.clear();
            }
            Ok(Event::Text(t)) => text.push_str(&t.xml10_content()),
            Ok(Event::CData(t)) => text.push_str(&t.xml10_content()),
            Ok(Event::GeneralRef(r)) => text.push_str(&resolve(&r)?),
            Ok(Event::End(_)) => {
                let name = path.pop().unwrap_or_default();
                let parent = path.last().map(String::as_str).unwrap_or("");
                let value = Some(text.trim().to_owned());
                match (parent, name.as_str()) {
                    ("Credentials", "AccessKeyId") => fields.access_key_id = value,
                    ("Credentials", "SecretAccessKey") => fields.secret_access_key = value,
                    ("Credentials", "SessionToken") => fields.session_token = value,
                    ("Credentials", "Expiration") => fields.expiration = value,
                    ("Error", "Code") => fields.code = value,
                    ("Error", "Message") => fields.message = value,
                    _ => {}
                }
                text.clear();
            }
            Ok(Event::Eof) => return Ok(fields),
            Ok(_) => {}
            Err(e) => return Err(format!("the answer is not XML ({e})")),
        }
    }
}

/// Reads STS's answer: the temporary credentials, or why not.
pub fn parse(status: u16, body: &[u8]) -> Result<Credentials, StsError> {
    let fail = |code: &str, message: String| StsError {
        code: code.to_owned(),
        message,
        status,
    };
    let success = (200..300).contains(&status);
    // An error that is not STS's XML (a proxy's page, or Envoy's own filters in front of STS,
    // e.g. no web identity token to add) is quoted, shortly: it holds no credentials.
    let not_sts = || {
        fail(
            "HttpError",
            if body.is_empty() {
                "no error message".to_owned()
            } else {
                format!(
                    "not an STS error document (from a proxy, or Envoy's filters in front of \
                     STS): {}",
                    excerpt(body)
                )
            },
        )
    };
    let xml = match std::str::from_utf8(body) {
        Ok(xml) => xml,
        Err(_) if !success => return Err(not_sts()),
        Err(_) => {
            return Err(fail(
                "InvalidResponse",
                "the answer is not UTF-8".to_owned(),
            ))
        }
    };
    let fields = match read_fields(xml) {
        Ok(fields) => fields,
        Err(_) if !success => return Err(not_sts()),
        Err(m) => return Err(fail("InvalidResponse", m)),
    };
    if !success || fields.code.is_some() {
        return match (fields.code, fields.message) {
            // (No code means the status was not a success.)
            (None, None) => Err(not_sts()),
            (code, message) => Err(fail(
                code.as_deref().unwrap_or("HttpError"),
                message.unwrap_or_else(|| "no error message".to_owned()),
            )),
        };
    }
    let missing = |what: &str| fail("InvalidResponse", format!("the answer has no {what}"));
    let access_key_id = fields
        .access_key_id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("AccessKeyId"))?;
    let secret_access_key = fields
        .secret_access_key
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("SecretAccessKey"))?;
    let session_token = fields
        .session_token
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("SessionToken"))?;
    let expiration = fields.expiration.ok_or_else(|| missing("Expiration"))?;
    let expires_at = super::expiry(&expiration).ok_or_else(|| {
        fail(
            "InvalidResponse",
            format!("Expiration {expiration:?} is not an ISO-8601 time"),
        )
    })?;
    Ok(Credentials {
        access_key_id,
        secret_access_key,
        session_token: Some(session_token),
        expires_at: Some(expires_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    const OK: &str = r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <SourceIdentity>x</SourceIdentity>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/healthlake-relay/relay-host1</Arn>
      <AssumedRoleId>AROA3XFRBF535PLBIFPI4:relay-host1</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>IQoJb3JpZ2luX2VjEJr//////////wEaCXVz+Zm9v&amp;bar=</SessionToken>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <Expiration>2026-11-27T23:00:00Z</Expiration>
      <AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>
    </Credentials>
    <PackedPolicySize>6</PackedPolicySize>
  </AssumeRoleResult>
  <ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata>
</AssumeRoleResponse>"#;

    #[test]
    fn parses_credentials_with_entities() {
        let c = parse(200, OK.as_bytes()).unwrap();
        assert_eq!(c.access_key_id, "ASIAIOSFODNN7EXAMPLE");
        assert_eq!(
            c.secret_access_key,
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
        );
        assert_eq!(
            c.session_token.as_deref(),
            Some("IQoJb3JpZ2luX2VjEJr//////////wEaCXVz+Zm9v&bar=")
        );
        let expected = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_820_400);
        assert_eq!(c.expires_at, Some(expected));
    }

    #[test]
    fn parses_error_documents() {
        let body = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>AccessDenied</Code>
    <Message>User: arn:aws:iam::123456789012:user/relay is not authorized to perform: sts:AssumeRole</Message>
  </Error><RequestId>abc</RequestId></ErrorResponse>"#;
        let e = parse(403, body.as_bytes()).unwrap_err();
        assert_eq!(e.code, "AccessDenied");
        assert!(e.message.contains("not authorized"));
        assert_eq!(e.status, 403);
        assert!(e.to_string().contains("403 AccessDenied"));
    }

    #[test]
    fn entities_and_character_references_are_decoded() {
        let body = r#"<ErrorResponse><Error><Code>AccessDenied</Code>
    <Message>a &lt;b&gt; &quot;c&quot; &apos;d&apos; &amp; &#65;&#x42;</Message></Error></ErrorResponse>"#;
        let e = parse(403, body.as_bytes()).unwrap_err();
        assert_eq!(e.message, r#"a <b> "c" 'd' & AB"#);
        // An unknown entity: not an STS document; an error answer is quoted as it came.
        let e = parse(403, b"<Error><Message>&nope;</Message></Error>").unwrap_err();
        assert_eq!(e.code, "HttpError");
        assert!(e.message.ends_with("&nope;</Message></Error>"), "{e}");
        let e = parse(200, b"<Error><Message>&nope;</Message></Error>").unwrap_err();
        assert_eq!(e.code, "InvalidResponse");
    }

    #[test]
    fn bad_answers_are_errors_not_credentials() {
        for (status, body) in [
            (200, ""),
            (
                200,
                "<AssumeRoleResponse><AssumeRoleResult/></AssumeRoleResponse>",
            ),
            (200, "not xml <"),
            (500, "upstream connect error"),
            (200, &OK.replace("2026-11-27T23:00:00Z", "tomorrow")),
            (
                200,
                &OK.replace("<SessionToken>", "<X>")
                    .replace("</SessionToken>", "</X>"),
            ),
        ] {
            assert!(parse(status, body.as_bytes()).is_err(), "{status} {body}");
        }
        assert_eq!(parse(503, b"").unwrap_err().code, "HttpError");
        // Not STS's XML: quoted, shortly, as what it is.
        let e = parse(401, b"Envoy has no web identity token").unwrap_err();
        assert_eq!((e.code.as_str(), e.status), ("HttpError", 401));
        assert!(
            e.message
                .ends_with("(from a proxy, or Envoy's filters in front of STS): Envoy has no web identity token"),
            "{e}"
        );
        let e = parse(502, b"<html><body>bad gateway</body>").unwrap_err();
        assert!(e.message.contains("bad gateway"), "{e}");
        let e = parse(500, &[0xff, 0xfe]).unwrap_err();
        assert_eq!(e.code, "HttpError");
        assert_eq!(
            parse(200, &[0xff]).unwrap_err().message,
            "the answer is not UTF-8"
        );
    }
}
