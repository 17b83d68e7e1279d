//! EC2 instance metadata, IMDSv2 only: `PUT /latest/api/token` for a session token, then, with
//! it, `GET /latest/meta-data/iam/security-credentials/` for the instance role's name and
//! `GET .../security-credentials/<role>` for its credentials (JSON, see
//! [`super::json_answer`]). No IMDSv1 fallback: a hardened instance refuses it anyway.

use super::call::{excerpt, Call};

/// The path of the session token.
pub const TOKEN_PATH: &str = "/latest/api/token";
/// The path listing the instance role.
pub const ROLE_PATH: &str = "/latest/meta-data/iam/security-credentials/";
/// The header asking for a session token of that many seconds.
pub const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
/// The header carrying the session token.
pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";

/// Where the instance metadata service is (validated by `config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imds {
    pub cluster: String,
    /// The `:authority`, e.g. `169.254.169.254`.
    pub host: String,
    /// Lifetime of the session token asked for (1 to 21600 s); one is asked for every fetch.
    pub token_ttl_seconds: u32,
}

/// Step 1: the session token.
pub fn token_call(i: &Imds) -> Call {
    Call::new(&i.cluster, "PUT", &i.host, TOKEN_PATH)
        .header(TTL_HEADER, &i.token_ttl_seconds.to_string())
}

fn text(what: &str, status: u16, body: &[u8]) -> Result<String, String> {
    if status != 200 {
        return Err(format!("{what}: answered {status}: {}", excerpt(body)));
    }
    std::str::from_utf8(body)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("{what}: answered 200 without a text body"))
}

/// The session token of the answer to [`token_call`] (never quoted in an error).
pub fn read_token(status: u16, body: &[u8]) -> Result<String, String> {
    let token = text("the session token (PUT /latest/api/token)", status, body)?;
    if token.len() > 1024 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "the session token (PUT /latest/api/token): answered a token a header cannot carry"
                .to_owned(),
        );
    }
    Ok(token)
}

/// Step 2: the instance role's name.
pub fn role_call(i: &Imds, token: &str) -> Call {
    Call::new(&i.cluster, "GET", &i.host, ROLE_PATH).header(TOKEN_HEADER, token)
}

/// The role name of the answer to [`role_call`]: its first line, an IAM role name.
pub fn read_role(status: u16, body: &[u8]) -> Result<String, String> {
    let listed = text(
        "the instance role (GET /latest/meta-data/iam/security-credentials/)",
        status,
        body,
    )?;
    let role = listed.lines().next().unwrap_or("").trim().to_owned();
    let valid = (1..=64).contains(&role.len())
        && role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    if valid {
        Ok(role)
    } else {
        // Not quoted: a 200 from a wrong endpoint could be credentials.
        Err(format!(
            "the instance role: answered 200 with {} bytes in {} lines that are not an IAM role \
             name (is an instance profile attached, and is this the instance metadata service?)",
            body.len(),
            listed.lines().count()
        ))
    }
}

/// Step 3: the role's credentials.
pub fn credentials_call(i: &Imds, token: &str, role: &str) -> Call {
    Call::new(&i.cluster, "GET", &i.host, &format!("{ROLE_PATH}{role}")).header(TOKEN_HEADER, token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imds() -> Imds {
        Imds {
            cluster: "imds".into(),
            host: "169.254.169.254".into(),
            token_ttl_seconds: 300,
        }
    }

    #[test]
    fn three_calls_with_the_session_token() {
        let t = token_call(&imds());
        assert_eq!(t.get(":method"), Some("PUT"));
        assert_eq!(t.get(":path"), Some("/latest/api/token"));
        assert_eq!(t.get(":authority"), Some("169.254.169.254"));
        assert_eq!(t.get(TTL_HEADER), Some("300"));
        assert_eq!(t.cluster, "imds");
        let r = role_call(&imds(), "tok");
        assert_eq!(r.get(":method"), Some("GET"));
        assert_eq!(r.get(":path"), Some(ROLE_PATH));
        assert_eq!(r.get(TOKEN_HEADER), Some("tok"));
        let c = credentials_call(&imds(), "tok", "relay-role");
        assert_eq!(
            c.get(":path"),
            Some("/latest/meta-data/iam/security-credentials/relay-role")
        );
        assert_eq!(c.get(TOKEN_HEADER), Some("tok"));
    }

    #[test]
    fn answers_are_checked() {
        assert_eq!(read_token(200, b"AQAEAtoken==\n").unwrap(), "AQAEAtoken==");
        let e = read_token(400, b"bad ttl").unwrap_err();
        assert!(e.ends_with("answered 400: bad ttl"), "{e}");
        assert!(read_token(200, b"").is_err());
        assert!(read_token(200, b"two words").is_err());
        assert!(read_token(200, &[0xff]).is_err());
        assert_eq!(read_token(200, &[b't'; 1024]).unwrap().len(), 1024);
        assert!(read_token(200, &[b't'; 1025]).is_err());
        assert_eq!(
            read_role(200, b"relay-role\nother\n").unwrap(),
            "relay-role"
        );
        let e = read_role(401, b"").unwrap_err();
        assert!(e.contains("answered 401"), "{e}");
        for bad in [&b"../etc"[..], b"a b", &[b'r'; 65]] {
            let e = read_role(200, bad).unwrap_err();
            assert!(e.contains("not an IAM role name"), "{e}");
        }
        // Credentials answered on the listing's path are never quoted.
        let creds = br#"{"AccessKeyId":"ASIAX","SecretAccessKey":"s3cr3t","Token":"t0k3n"}"#;
        let e = read_role(200, creds).unwrap_err();
        assert!(
            !e.contains("s3cr3t") && !e.contains("t0k3n") && !e.contains("ASIAX"),
            "{e}"
        );
    }
}
