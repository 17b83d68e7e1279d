//! The web identity token check (`--web-identity-token-file`): with IRSA, the SDK reads a
//! projected service-account token from `AWS_WEB_IDENTITY_TOKEN_FILE` and sends it to STS as the
//! `WebIdentityToken` of an `AssumeRoleWithWebIdentity` call. moto accepts any token, so the
//! proxy checks it: the parameter (form body, else query string; percent-decoded) must equal the
//! file's current content (read afresh for each call, so a rotated token is taken at once;
//! surrounding whitespace trimmed). Otherwise the call is not forwarded and is answered as STS
//! answers a bad token: `400 InvalidIdentityToken`.
//!
//! The token is never recorded or printed; the call log holds the first 12 hex digits of its
//! SHA-256 instead, so a test can tell which token version a call carried.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::param_of;

/// The action whose calls carry a web identity token.
pub const ACTION: &str = "AssumeRoleWithWebIdentity";
/// The parameter holding it.
pub const PARAMETER: &str = "WebIdentityToken";
/// The error code STS answers for a token it does not accept.
pub const ERROR_CODE: &str = "InvalidIdentityToken";
/// How many hex digits of the SHA-256 the call log keeps.
pub const SHA256_PREFIX_LEN: usize = 12;

/// The `WebIdentityToken` of a call: from the form body, else from the query string.
pub fn token_of(query: Option<&str>, body: &[u8]) -> Option<String> {
    param_of(PARAMETER, query, body)
}

/// The first [`SHA256_PREFIX_LEN`] hex digits of the token's SHA-256.
pub fn sha256_prefix(token: &str) -> String {
    let mut digest = hex::encode(Sha256::digest(token.as_bytes()));
    digest.truncate(SHA256_PREFIX_LEN);
    digest
}

/// How a call's token fared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// It equals the file's content: forward the call.
    Accepted,
    /// It is absent or different: answer `InvalidIdentityToken` with this message.
    Refused(&'static str),
    /// The file cannot be read (or is empty): why.
    Unreadable(String),
}

/// Compares a call's token with the file's current content.
pub fn check(file: &Path, presented: Option<&str>) -> Check {
    let expected = match std::fs::read(file) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) if !text.trim().is_empty() => text.trim().to_string(),
            Ok(_) => {
                return Check::Unreadable(format!(
                    "the web identity token file {} is empty",
                    file.display()
                ))
            }
            Err(_) => {
                return Check::Unreadable(format!(
                    "the web identity token file {} is not UTF-8",
                    file.display()
                ))
            }
        },
        Err(e) => {
            return Check::Unreadable(format!(
                "cannot read the web identity token file {}: {e}",
                file.display()
            ))
        }
    };
    match presented {
        None => Check::Refused("The request has no WebIdentityToken."),
        Some(token) => {
            let same: bool =
                subtle::ConstantTimeEq::ct_eq(token.as_bytes(), expected.as_bytes()).into();
            if same {
                Check::Accepted
            } else {
                Check::Refused(
                    "The web identity token that was passed could not be validated by AWS. Get a new identity token from the identity provider and then retry the request.",
                )
            }
        }
    }
}

/// STS's `ErrorResponse` for a refused token.
pub fn invalid_identity_token_xml(message: &str, request_id: &str) -> String {
    format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <Error>\n    \
         <Type>Sender</Type>\n    <Code>{ERROR_CODE}</Code>\n    <Message>{message}</Message>\n  \
         </Error>\n  <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n"
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sts::xml;

    #[test]
    fn finds_the_token_in_the_body_or_the_query() {
        assert_eq!(
            token_of(
                None,
                b"Action=AssumeRoleWithWebIdentity&WebIdentityToken=eyJh.eyJz%2Bx.c2ln&Version=2011-06-15"
            )
            .as_deref(),
            Some("eyJh.eyJz+x.c2ln")
        );
        assert_eq!(
            token_of(
                Some("Action=AssumeRoleWithWebIdentity&WebIdentityToken=q.t.s"),
                b""
            )
            .as_deref(),
            Some("q.t.s")
        );
        // The body wins.
        assert_eq!(
            token_of(Some("WebIdentityToken=query"), b"WebIdentityToken=body").as_deref(),
            Some("body")
        );
        assert_eq!(token_of(Some("Action=X"), b"Action=Y"), None);
    }

    #[test]
    fn compares_with_the_file() {
        let dir = std::env::temp_dir().join(format!("hle-webid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        assert!(matches!(
            check(&file, Some("x")),
            Check::Unreadable(e) if e.contains("cannot read")
        ));
        std::fs::write(&file, "eyJhbGciOi.version1.sig\n").unwrap();
        assert_eq!(
            check(&file, Some("eyJhbGciOi.version1.sig")),
            Check::Accepted
        );
        assert!(matches!(
            check(&file, Some("eyJhbGciOi.version0.sig")),
            Check::Refused(_)
        ));
        assert!(
            matches!(check(&file, None), Check::Refused(m) if m.contains("no WebIdentityToken"))
        );
        std::fs::write(&file, "eyJhbGciOi.version2.sig").unwrap();
        assert!(matches!(
            check(&file, Some("eyJhbGciOi.version1.sig")),
            Check::Refused(_)
        ));
        std::fs::write(&file, "\n").unwrap();
        assert!(matches!(check(&file, Some("")), Check::Unreadable(e) if e.contains("empty")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn error_answer_and_digest() {
        let body = invalid_identity_token_xml("bad token", "req-1");
        assert_eq!(
            xml::parse_error_code(body.as_bytes()).as_deref(),
            Some(ERROR_CODE)
        );
        assert!(
            body.contains("<Type>Sender</Type>") && body.contains("<RequestId>req-1</RequestId>")
        );
        // echo -n abc | sha256sum
        assert_eq!(sha256_prefix("abc"), "ba7816bf8f01");
    }
}
