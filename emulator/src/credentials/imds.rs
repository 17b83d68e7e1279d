//! The EC2 instance metadata service as a hardened instance runs it (IMDSv2 required, no v1
//! fallback), for the role credentials the SDK default chain reads last:
//!
//! - `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds: N` (1..=21600) opens a
//!   session: the answer is its token (`text/plain`), with the same TTL header. A missing or bad
//!   TTL is a `400`, another method a `405`.
//! - `GET /latest/meta-data/iam/security-credentials/` names the role (one line, no newline).
//! - `GET /latest/meta-data/iam/security-credentials/ROLE` hands out a fresh credential set
//!   (`Code`, `LastUpdated`, `Type`, `AccessKeyId`, `SecretAccessKey`, `Token`, `Expiration`);
//!   another role is a `404`.
//!
//! Every `GET` needs `X-aws-ec2-metadata-token` holding a token of an open session (`401`
//! otherwise), and any request with `X-Forwarded-For` is refused (`403`), as IMDS refuses what a
//! proxy forwards.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method, StatusCode};

use super::{method_not_allowed, random, EndpointRequest, Handled, IssuedBy, Issuer, Reply};

/// Where sessions are opened.
pub const TOKEN_PATH: &str = "/latest/api/token";
/// The session lifetime asked for, and answered.
pub const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
/// The session token every `GET` carries.
pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// The longest session IMDS grants (six hours).
pub const MAX_TTL_SECONDS: u64 = 21_600;
/// The role listing; `/ROLE` after it, the role's credentials.
pub const CREDENTIALS_PATH: &str = "/latest/meta-data/iam/security-credentials";
/// The role `--imds-role` names unless told otherwise.
pub const DEFAULT_ROLE: &str = "healthlake-relay-instance";
/// Sessions kept at most; past that the one closest to its end is dropped.
const MAX_SESSIONS: usize = 10_000;

/// Whether a path is IMDS's (`/latest/...`).
pub fn is_imds_path(path: &str) -> bool {
    path == "/latest" || path.starts_with("/latest/")
}

/// Checks an IAM role name: 1 to 64 characters, letters, digits and `+=,.@_-`.
pub fn check_role_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
    if name.is_empty() || name.len() > 64 || !name.chars().all(ok_char) {
        return Err(format!(
            "{name:?} is not an IAM role name (1 to 64 letters, digits and +=,.@_-)"
        ));
    }
    Ok(())
}

/// The session TTL a token request asks for: decimal digits, 1 to [`MAX_TTL_SECONDS`].
pub fn parse_ttl(headers: &HeaderMap) -> Result<u64, String> {
    let value = headers
        .get(TTL_HEADER)
        .ok_or_else(|| "no X-aws-ec2-metadata-token-ttl-seconds header".to_string())?;
    let text = value.to_str().unwrap_or_default().trim();
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("X-aws-ec2-metadata-token-ttl-seconds is not a decimal number".into());
    }
    match text.parse::<u64>() {
        Ok(n) if (1..=MAX_TTL_SECONDS).contains(&n) => Ok(n),
        _ => Err(format!(
            "X-aws-ec2-metadata-token-ttl-seconds {text} is not 1 to {MAX_TTL_SECONDS}"
        )),
    }
}

/// The open IMDSv2 sessions: token and the end of its TTL. Tokens are never shown.
#[derive(Default)]
pub struct Sessions {
    tokens: HashMap<String, SystemTime>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("open", &self.tokens.len())
            .finish()
    }
}

impl Sessions {
    /// Opens a session of `ttl` at `now`; returns its token.
    pub fn open(&mut self, ttl: Duration, now: SystemTime) -> String {
        self.tokens.retain(|_, end| now < *end);
        if self.tokens.len() >= MAX_SESSIONS {
            let soonest = self
                .tokens
                .iter()
                .min_by_key(|(_, end)| **end)
                .map(|(t, _)| t.clone());
            if let Some(t) = soonest {
                self.tokens.remove(&t);
            }
        }
        let token = random::imds_token();
        self.tokens
            .insert(token.clone(), now.checked_add(ttl).unwrap_or(now));
        token
    }

    /// Whether `token` belongs to a session still open at `now`.
    pub fn is_open(&self, token: &str, now: SystemTime) -> bool {
        self.tokens.get(token).is_some_and(|end| now < *end)
    }
}

/// What an IMDS path is.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Token,
    RoleList,
    Role(&'a str),
    Other,
}

fn route(path: &str) -> Route<'_> {
    if path == TOKEN_PATH {
        return Route::Token;
    }
    match path.strip_prefix(CREDENTIALS_PATH) {
        Some("" | "/") => Route::RoleList,
        Some(rest) => match rest.strip_prefix('/') {
            Some(role) if !role.contains('/') => Route::Role(role),
            _ => Route::Other,
        },
        None => Route::Other,
    }
}

fn session_error(headers: &HeaderMap, sessions: &Sessions, now: SystemTime) -> Option<String> {
    match headers.get(TOKEN_HEADER) {
        None => Some("no X-aws-ec2-metadata-token header (IMDSv2 is required)".into()),
        Some(v) if sessions.is_open(v.to_str().unwrap_or_default(), now) => None,
        Some(_) => Some("the X-aws-ec2-metadata-token is unknown or its session has ended".into()),
    }
}

/// Answers one request on an IMDS path (see the module documentation) and records it.
/// `frozen`: the state was saved for shutdown, so no set may be issued.
pub fn handle(issuer: &mut Issuer, req: &EndpointRequest<'_>, role: &str, frozen: bool) -> Handled {
    let reply = answer(issuer, req, role, frozen);
    issuer.finish(IssuedBy::Imds, req, reply)
}

fn answer(issuer: &mut Issuer, req: &EndpointRequest<'_>, role: &str, frozen: bool) -> Reply {
    if issuer.settings.down {
        return Reply::text(
            StatusCode::SERVICE_UNAVAILABLE,
            super::DOWN_BODY.to_string(),
        )
        .refused(super::DOWN_BODY);
    }
    if req.headers.contains_key("x-forwarded-for") {
        return Reply::text(StatusCode::FORBIDDEN, "Forbidden\n")
            .refused("X-Forwarded-For is present: IMDS does not answer forwarded requests");
    }
    let route = route(req.path);
    if route == Route::Token {
        if *req.method != Method::PUT {
            return method_not_allowed(req.method, "PUT");
        }
        return match parse_ttl(req.headers) {
            Ok(ttl) => {
                let token = issuer.sessions.open(Duration::from_secs(ttl), req.now);
                let mut reply =
                    Reply::text(StatusCode::OK, token).with_header(TTL_HEADER, ttl.to_string());
                reply.note = Some(format!("session opened (TTL {ttl} s)"));
                reply
            }
            Err(e) => Reply::text(StatusCode::BAD_REQUEST, "Bad Request\n").refused(e),
        };
    }
    if *req.method != Method::GET {
        return method_not_allowed(req.method, "GET");
    }
    if let Some(e) = session_error(req.headers, &issuer.sessions, req.now) {
        return Reply::text(StatusCode::UNAUTHORIZED, "Unauthorized\n").refused(e);
    }
    match route {
        Route::RoleList => {
            let mut reply = Reply::text(StatusCode::OK, role.to_string());
            reply.note = Some(format!("role {role} listed"));
            reply
        }
        Route::Role(name) if name == role => issuer.vend(IssuedBy::Imds, req.now, frozen),
        Route::Role(name) => Reply::text(StatusCode::NOT_FOUND, "Not Found\n")
            .refused(format!("no role {name:?} (the instance's role is {role})")),
        Route::Token | Route::Other => Reply::text(StatusCode::NOT_FOUND, "Not Found\n")
            .refused(format!("no such metadata path: {}", req.path)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn routes() {
        assert_eq!(route("/latest/api/token"), Route::Token);
        assert_eq!(
            route("/latest/meta-data/iam/security-credentials/"),
            Route::RoleList
        );
        assert_eq!(
            route("/latest/meta-data/iam/security-credentials"),
            Route::RoleList
        );
        assert_eq!(
            route("/latest/meta-data/iam/security-credentials/r"),
            Route::Role("r")
        );
        assert_eq!(
            route("/latest/meta-data/iam/security-credentials/r/"),
            Route::Other
        );
        assert_eq!(
            route("/latest/meta-data/iam/security-credentialsX"),
            Route::Other
        );
        assert_eq!(route("/latest/meta-data/"), Route::Other);
        assert!(is_imds_path("/latest") && is_imds_path("/latest/x"));
        assert!(!is_imds_path("/latestx") && !is_imds_path("/datastore/x"));
    }

    #[test]
    fn ttl_values() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(TTL_HEADER, HeaderValue::from_str(v).unwrap());
            parse_ttl(&h)
        };
        assert_eq!(with("1"), Ok(1));
        assert_eq!(with("21600"), Ok(21600));
        assert_eq!(with("0021600"), Ok(21600));
        for bad in [
            "0",
            "21601",
            "",
            "-1",
            "+5",
            "1.5",
            "abc",
            "99999999999999999999",
        ] {
            assert!(with(bad).is_err(), "{bad}");
        }
        assert!(parse_ttl(&HeaderMap::new())
            .unwrap_err()
            .contains("no X-aws"));
    }

    #[test]
    fn role_names() {
        assert!(check_role_name(DEFAULT_ROLE).is_ok());
        assert!(check_role_name("a+=,.@_-9").is_ok());
        for bad in ["", "a/b", "a b", &"r".repeat(65)] {
            assert!(check_role_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sessions_end_with_their_ttl() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_816_800);
        let mut s = Sessions::default();
        let token = s.open(Duration::from_secs(10), t0);
        assert!(s.is_open(&token, t0));
        assert!(s.is_open(&token, t0 + Duration::from_millis(9999)));
        assert!(!s.is_open(&token, t0 + Duration::from_secs(10)));
        assert!(!s.is_open("AQAEAunknown", t0));
        assert!(!format!("{s:?}").contains(&token));
        // Ended sessions are dropped when another opens.
        let other = s.open(Duration::from_secs(10), t0 + Duration::from_secs(11));
        assert_eq!(s.tokens.len(), 1);
        assert!(s.is_open(&other, t0 + Duration::from_secs(11)));
    }
}
