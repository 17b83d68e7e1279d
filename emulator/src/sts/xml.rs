//! Reading the two STS (AWS query protocol) answers the recording proxy cares about:
//! `{Action}Response/{Action}Result/Credentials` of a credential-issuing call, and the error code
//! of an `ErrorResponse`.
//!
//! Elements are matched by local name, so the default namespace STS declares
//! (`https://sts.amazonaws.com/doc/2011-06-15/`) or a prefix makes no difference. Text is read
//! with entity and character references resolved, CDATA included, and trimmed.

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::Event;
use quick_xml::Reader;

/// The credential set in a successful answer. `Debug` never shows the secret or the token.
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialsXml {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// As STS wrote it.
    pub expiration: String,
}

impl std::fmt::Debug for CredentialsXml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialsXml")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &"<redacted>")
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// Every leaf element of a document, as (path of local names, trimmed text), in document order.
/// Elements that contain other elements are not listed. An error for a document that is not
/// well-formed XML.
fn leaves(xml: &[u8]) -> Result<Vec<(Vec<String>, String)>, String> {
    let text = std::str::from_utf8(xml).map_err(|_| "the answer is not UTF-8".to_string())?;
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut path: Vec<String> = Vec::new();
    // The text gathered since the last start tag, and whether a child element came since.
    let mut current = String::new();
    let mut has_children = false;
    let mut out = Vec::new();
    let mut seen_root = false;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                if path.is_empty() && seen_root {
                    return Err("more than one root element".into());
                }
                seen_root = true;
                path.push(e.local_name().as_ref().to_string());
                current.clear();
                has_children = false;
            }
            Ok(Event::Empty(e)) => {
                if path.is_empty() && seen_root {
                    return Err("more than one root element".into());
                }
                seen_root = true;
                let mut leaf = path.clone();
                leaf.push(e.local_name().as_ref().to_string());
                out.push((leaf, String::new()));
                has_children = true;
            }
            Ok(Event::Text(t)) => current.push_str(&t.xml10_content()),
            Ok(Event::CData(t)) => current.push_str(&t.xml10_content()),
            Ok(Event::GeneralRef(r)) => {
                if let Some(c) = r.resolve_char_ref().map_err(|e| e.to_string())? {
                    current.push(c);
                } else {
                    let name = r.xml10_content();
                    let resolved = resolve_predefined_entity(&name)
                        .ok_or_else(|| format!("unknown entity &{name};"))?;
                    current.push_str(resolved);
                }
            }
            Ok(Event::End(_)) => {
                if !has_children {
                    out.push((path.clone(), current.trim().to_string()));
                }
                path.pop();
                current.clear();
                // The parent has at least this child.
                has_children = true;
            }
            Ok(Event::Eof) => {
                if !seen_root {
                    return Err("no root element".into());
                }
                return Ok(out);
            }
            Ok(_) => {}
            Err(e) => {
                return Err(format!(
                    "not well-formed XML at byte {}: {e}",
                    reader.error_position()
                ))
            }
        }
    }
}

fn is_path(path: &[String], expected: &[&str]) -> bool {
    path.len() == expected.len() && path.iter().zip(expected).all(|(a, b)| a == b)
}

/// The credentials of a successful `{action}` answer
/// (`{action}Response/{action}Result/Credentials/{AccessKeyId,SecretAccessKey,SessionToken,
/// Expiration}`). Errors name what is missing, never a secret or a token.
pub fn parse_credentials(xml: &[u8], action: &str) -> Result<CredentialsXml, String> {
    let response = format!("{action}Response");
    let result = format!("{action}Result");
    let leaves = leaves(xml)?;
    let field = |name: &str| -> Result<String, String> {
        let expected = [response.as_str(), result.as_str(), "Credentials", name];
        let mut found = leaves.iter().filter(|(p, _)| is_path(p, &expected));
        match (found.next(), found.next()) {
            (Some((_, v)), None) if !v.is_empty() => Ok(v.clone()),
            (Some(_), None) => Err(format!("{} is empty", expected.join("/"))),
            (None, _) => Err(format!("the answer has no {}", expected.join("/"))),
            (Some(_), Some(_)) => Err(format!(
                "the answer has more than one {}",
                expected.join("/")
            )),
        }
    };
    Ok(CredentialsXml {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: field("SecretAccessKey")?,
        session_token: field("SessionToken")?,
        expiration: field("Expiration")?,
    })
}

/// The error code of an STS error answer: `ErrorResponse/Error/Code`, or the forms
/// `ErrorResponse/Errors/Error/Code` and `Error/Code` some implementations (moto among them)
/// write. `None` when the body is not such a document.
pub fn parse_error_code(xml: &[u8]) -> Option<String> {
    let leaves = leaves(xml).ok()?;
    leaves
        .into_iter()
        .find(|(p, v)| {
            !v.is_empty()
                && (is_path(p, &["ErrorResponse", "Error", "Code"])
                    || is_path(p, &["ErrorResponse", "Errors", "Error", "Code"])
                    || is_path(p, &["Error", "Code"]))
        })
        .map(|(_, v)| v)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// What AWS documents (and moto answers) for AssumeRole.
    const ASSUME_ROLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <SourceIdentity>DevUser123</SourceIdentity>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/demo/John</Arn>
      <AssumedRoleId>ARO123EXAMPLE123:John</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <SessionToken>
       AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQW&#43;LWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d&amp;xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==
      </SessionToken>
      <Expiration>2026-11-27T23:00:00.123+00:00</Expiration>
    </Credentials>
    <PackedPolicySize>8</PackedPolicySize>
  </AssumeRoleResult>
  <ResponseMetadata>
    <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>
  </ResponseMetadata>
</AssumeRoleResponse>"#;

    #[test]
    fn reads_assume_role_credentials() {
        let c = parse_credentials(ASSUME_ROLE.as_bytes(), "AssumeRole").unwrap();
        assert_eq!(c.access_key_id, "ASIAIOSFODNN7EXAMPLE");
        assert_eq!(
            c.secret_access_key,
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
        );
        assert!(c.session_token.starts_with("AQoDYXdzEPT//////////wEXAMPLE"));
        assert!(c.session_token.contains("4FZTwdQW+LWsK"), "char reference");
        assert!(c.session_token.contains("q6d&xo0rK"), "entity reference");
        assert!(c.session_token.ends_with("CCR/oLxBA=="));
        assert_eq!(c.expiration, "2026-11-27T23:00:00.123+00:00");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("wJalr") && !shown.contains("AQoD"),
            "{shown}"
        );

        // A prefix instead of a default namespace changes nothing.
        let prefixed = r#"<s:GetSessionTokenResponse xmlns:s="https://sts.amazonaws.com/doc/2011-06-15/"><s:GetSessionTokenResult><s:Credentials><s:AccessKeyId>ASIA1</s:AccessKeyId><s:SecretAccessKey>sec</s:SecretAccessKey><s:SessionToken><![CDATA[tok<en>]]></s:SessionToken><s:Expiration>2026-11-27T23:00:00Z</s:Expiration></s:Credentials></s:GetSessionTokenResult></s:GetSessionTokenResponse>"#;
        let c = parse_credentials(prefixed.as_bytes(), "GetSessionToken").unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.session_token.as_str()),
            ("ASIA1", "tok<en>")
        );
    }

    #[test]
    fn missing_or_misplaced_credentials_are_errors() {
        // The action's element names must match.
        let e = parse_credentials(ASSUME_ROLE.as_bytes(), "GetSessionToken").unwrap_err();
        assert!(e.contains("GetSessionTokenResponse"), "{e}");
        let no_token = ASSUME_ROLE.replace("SessionToken>", "Other>");
        let e = parse_credentials(no_token.as_bytes(), "AssumeRole").unwrap_err();
        assert!(e.ends_with("Credentials/SessionToken"), "{e}");
        let empty = r#"<AssumeRoleResponse><AssumeRoleResult><Credentials><AccessKeyId/><SecretAccessKey>s</SecretAccessKey><SessionToken>t</SessionToken><Expiration>2026-11-27T23:00:00Z</Expiration></Credentials></AssumeRoleResult></AssumeRoleResponse>"#;
        let e = parse_credentials(empty.as_bytes(), "AssumeRole").unwrap_err();
        assert!(e.contains("AccessKeyId is empty"), "{e}");
        let twice = ASSUME_ROLE.replace(
            "<Expiration>",
            "<AccessKeyId>ASIAOTHER</AccessKeyId><Expiration>",
        );
        let e = parse_credentials(twice.as_bytes(), "AssumeRole").unwrap_err();
        assert!(e.contains("more than one"), "{e}");
        for bad in ["", "not xml", "<a><b></a>", "<a/><b/>", "<a>&unknown;</a>"] {
            assert!(
                parse_credentials(bad.as_bytes(), "AssumeRole").is_err(),
                "{bad}"
            );
        }
        let e = parse_credentials(&[0xff, 0xfe], "AssumeRole").unwrap_err();
        assert!(e.contains("UTF-8"), "{e}");
    }

    #[test]
    fn reads_error_codes() {
        // What AWS documents.
        let aws = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error>
    <Type>Sender</Type>
    <Code>AccessDenied</Code>
    <Message>User: arn:aws:iam::123456789012:user/relay is not authorized to perform: sts:AssumeRole</Message>
  </Error>
  <RequestId>4b6e4c8d-0000-0000-0000-000000000000</RequestId>
</ErrorResponse>"#;
        assert_eq!(
            parse_error_code(aws.as_bytes()).as_deref(),
            Some("AccessDenied")
        );
        // moto's form.
        let moto = r#"<?xml version="1.0" encoding="utf-8"?>
<ErrorResponse><Errors><Error><Code>SignatureDoesNotMatch</Code><Message><![CDATA[The request signature we calculated does not match]]></Message><Type>Sender</Type></Error></Errors></ErrorResponse>"#;
        assert_eq!(
            parse_error_code(moto.as_bytes()).as_deref(),
            Some("SignatureDoesNotMatch")
        );
        let bare = "<Error><Code>InvalidClientTokenId</Code></Error>";
        assert_eq!(
            parse_error_code(bare.as_bytes()).as_deref(),
            Some("InvalidClientTokenId")
        );
        for none in [
            "",
            "{\"__type\":\"X\"}",
            "<ErrorResponse><Error><Code></Code></Error></ErrorResponse>",
            "<Other><Error><Code>X</Code></Error></Other>",
            ASSUME_ROLE,
        ] {
            assert_eq!(parse_error_code(none.as_bytes()), None, "{none}");
        }
    }
}
