//! The container credentials endpoint: what the ECS agent serves a task role on
//! (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, `/v2/credentials/ID`) and the EKS Pod Identity agent
//! on (`AWS_CONTAINER_CREDENTIALS_FULL_URI`, `/v1/credentials`).
//!
//! `GET /v1/credentials` and `GET /v2/credentials/ID` (any non-empty ID) hand out a fresh
//! credential set (`AccessKeyId`, `SecretAccessKey`, `Token`, `Expiration`, `AccountId`,
//! `application/json`). With `--container-token-file`, every request must carry an
//! `Authorization` header equal to the file's content, read afresh for each request (so a
//! rotated token is taken at once) with the surrounding whitespace (the trailing newline)
//! trimmed, as the SDKs read `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`: `401` otherwise, `500`
//! when the file cannot be read. The token is never echoed, logged or recorded.

use std::path::Path;

use http::{Method, StatusCode};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::{
    method_not_allowed, EndpointRequest, Handled, IssuedBy, Issuer, Reply, APPLICATION_JSON,
};

/// What the `Authorization` header is checked against.
#[derive(Clone, PartialEq, Eq)]
pub enum Authorization {
    /// No `--container-token-file`: no header needed (ECS relative URI style).
    NotRequired,
    /// The token file's current content, trimmed.
    Token(String),
    /// The token file could not be read (or is empty): why.
    Unreadable(String),
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Authorization::NotRequired => f.write_str("NotRequired"),
            Authorization::Token(_) => f.write_str("Token(<redacted>)"),
            Authorization::Unreadable(e) => f.debug_tuple("Unreadable").field(e).finish(),
        }
    }
}

impl Authorization {
    /// Reads the token file now (`None`: no file configured).
    pub fn read(file: Option<&Path>) -> Self {
        let Some(path) = file else {
            return Authorization::NotRequired;
        };
        match std::fs::read(path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) if !text.trim().is_empty() => {
                    Authorization::Token(text.trim().to_string())
                }
                Ok(_) => Authorization::Unreadable(format!(
                    "the container token file {} is empty",
                    path.display()
                )),
                Err(_) => Authorization::Unreadable(format!(
                    "the container token file {} is not UTF-8",
                    path.display()
                )),
            },
            Err(e) => Authorization::Unreadable(format!(
                "cannot read the container token file {}: {e}",
                path.display()
            )),
        }
    }
}

/// Whether a path is the container endpoint's (`/v1/credentials`, `/v2/credentials...`).
pub fn is_container_path(path: &str) -> bool {
    path == "/v1/credentials" || path == "/v2/credentials" || path.starts_with("/v2/credentials/")
}

/// Whether a container path hands out credentials (`/v2/credentials/` needs an ID).
fn is_credentials_path(path: &str) -> bool {
    path == "/v1/credentials"
        || path
            .strip_prefix("/v2/credentials/")
            .is_some_and(|id| !id.is_empty())
}

/// A small JSON error body.
fn error(status: StatusCode, code: &str, message: &str) -> Reply {
    let body = json!({ "code": code, "message": message });
    Reply::new(
        status,
        APPLICATION_JSON,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
    .refused(message)
}

/// Answers one request on a container path (see the module documentation) and records it.
/// `frozen`: the state was saved for shutdown, so no set may be issued.
pub fn handle(
    issuer: &mut Issuer,
    req: &EndpointRequest<'_>,
    authorization: &Authorization,
    frozen: bool,
) -> Handled {
    let reply = answer(issuer, req, authorization, frozen);
    issuer.finish(IssuedBy::Container, req, reply)
}

fn answer(
    issuer: &mut Issuer,
    req: &EndpointRequest<'_>,
    authorization: &Authorization,
    frozen: bool,
) -> Reply {
    if issuer.settings.down {
        return Reply::text(
            StatusCode::SERVICE_UNAVAILABLE,
            super::DOWN_BODY.to_string(),
        )
        .refused(super::DOWN_BODY);
    }
    if *req.method != Method::GET {
        return method_not_allowed(req.method, "GET");
    }
    if !is_credentials_path(req.path) {
        return error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "no credentials here: use /v1/credentials or /v2/credentials/ID",
        );
    }
    match authorization {
        Authorization::NotRequired => {}
        Authorization::Unreadable(e) => {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError", e)
        }
        Authorization::Token(expected) => {
            let presented = req.headers.get(http::header::AUTHORIZATION);
            let matches =
                presented.is_some_and(|v| bool::from(v.as_bytes().ct_eq(expected.as_bytes())));
            if !matches {
                let message = if presented.is_some() {
                    "the Authorization header does not match the container authorization token"
                } else {
                    "no Authorization header (the container authorization token is required)"
                };
                return error(StatusCode::UNAUTHORIZED, "Unauthorized", message);
            }
        }
    }
    issuer.vend(IssuedBy::Container, req.now, frozen)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        for p in [
            "/v1/credentials",
            "/v2/credentials/abc",
            "/v2/credentials/a/b",
        ] {
            assert!(is_container_path(p) && is_credentials_path(p), "{p}");
        }
        for p in ["/v2/credentials", "/v2/credentials/"] {
            assert!(is_container_path(p) && !is_credentials_path(p), "{p}");
        }
        for p in [
            "/v1/credentials/",
            "/v1/credentialsx",
            "/v3/credentials",
            "/",
        ] {
            assert!(!is_container_path(p), "{p}");
        }
    }

    #[test]
    fn reads_the_token_file_trimmed() {
        let dir = std::env::temp_dir().join(format!("hle-ctoken-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        assert_eq!(Authorization::read(None), Authorization::NotRequired);
        assert!(matches!(
            Authorization::read(Some(&file)),
            Authorization::Unreadable(e) if e.contains("cannot read")
        ));
        std::fs::write(&file, "s3cr3t-token\n").unwrap();
        let auth = Authorization::read(Some(&file));
        assert_eq!(auth, Authorization::Token("s3cr3t-token".into()));
        assert!(!format!("{auth:?}").contains("s3cr3t"));
        std::fs::write(&file, " \n").unwrap();
        assert!(matches!(
            Authorization::read(Some(&file)),
            Authorization::Unreadable(e) if e.contains("empty")
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
