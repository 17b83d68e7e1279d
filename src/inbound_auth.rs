//! Who may use the relay. It signs with the customer's AWS role, so whoever reaches it could write
//! to HealthLake: only Smile CDR may. Smile CDR presents a bearer token through a
//! `Subscription.channel.header` (`Authorization: Bearer ...`); the relay compares it, in constant
//! time, against the configured tokens (several, so a token can be rotated with an overlap).

use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

/// Shortest token accepted: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// The configured tokens, kept only as SHA-256 digests (equal length, so comparing digests in
/// constant time reveals nothing about a token's length or prefix).
#[derive(Clone, PartialEq, Eq)]
pub struct Tokens {
    digests: Vec<[u8; 32]>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({} configured)", self.digests.len())
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(token));
    out
}

/// Why a request is not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization` header.
    Missing,
    /// Not `Bearer <token>`.
    NotBearer,
    /// A bearer token that is not one of the configured ones.
    WrongToken,
}

impl Refusal {
    /// The explanation in the 401's OperationOutcome (never echoes what was presented).
    pub fn diagnostics(self) -> &'static str {
        match self {
            Refusal::Missing => {
                "Authentication required: send Authorization: Bearer <token> (a \
                 Subscription.channel.header in Smile CDR)."
            }
            Refusal::NotBearer => "The Authorization header must use the Bearer scheme.",
            Refusal::WrongToken => "The bearer token is not accepted by this relay.",
        }
    }
}

impl Tokens {
    /// Parses `RELAY_INBOUND_TOKENS`: tokens separated by commas (or new lines). Errors never
    /// include a token.
    pub fn parse(value: &str) -> Result<Tokens, String> {
        let tokens: Vec<&str> = value
            .split([',', '\n'])
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        if tokens.is_empty() {
            return Err(
                "no inbound token is configured (RELAY_INBOUND_TOKENS is empty)".to_owned(),
            );
        }
        if let Some(n) = tokens.iter().position(|t| t.len() < MIN_TOKEN_LEN) {
            return Err(format!(
                "inbound token #{} is shorter than {MIN_TOKEN_LEN} characters",
                n + 1
            ));
        }
        if let Some(n) = tokens
            .iter()
            .position(|t| !t.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(format!(
                "inbound token #{} has characters a header value cannot carry",
                n + 1
            ));
        }
        Ok(Tokens {
            digests: tokens.into_iter().map(|t| digest(t.as_bytes())).collect(),
        })
    }

    /// The tokens of `RELAY_INBOUND_TOKENS` (`env`, may be empty) and the configured digests of
    /// others (`inbound_token_sha256`), together; at least one is needed.
    pub fn from_sources(env: &str, digests: &[[u8; 32]]) -> Result<Tokens, String> {
        let listed = env.split([',', '\n']).any(|t| !t.trim().is_empty());
        let mut tokens = if !listed {
            Tokens {
                digests: Vec::new(),
            }
        } else {
            Tokens::parse(env)?
        };
        tokens.digests.extend_from_slice(digests);
        if tokens.digests.is_empty() {
            return Err(
                "no inbound token is configured (RELAY_INBOUND_TOKENS is empty and \
                        inbound_token_sha256 absent)"
                    .to_owned(),
            );
        }
        Ok(tokens)
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Checks an `Authorization` header value, as the bytes received (any bytes: a value that is
    /// not UTF-8 is simply not a configured token). Every configured token is compared, whatever
    /// matches, so the time taken does not depend on which one (if any) does.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(), Refusal> {
        let value = authorization.ok_or(Refusal::Missing)?.trim_ascii();
        let space = value
            .iter()
            .position(|&b| b == b' ')
            .ok_or(Refusal::NotBearer)?;
        let (scheme, token) = value.split_at(space);
        if !scheme.eq_ignore_ascii_case(b"bearer") {
            return Err(Refusal::NotBearer);
        }
        let presented = digest(token.trim_ascii());
        let matched = self
            .digests
            .iter()
            .fold(subtle::Choice::from(0), |acc, d| acc | d.ct_eq(&presented));
        if bool::from(matched) {
            Ok(())
        } else {
            Err(Refusal::WrongToken)
        }
    }
}

/// Whether a socket address as Envoy gives it (`127.0.0.1:5000`, `[::1]:5000`) is a loopback
/// one. Anything unreadable is not.
pub fn is_loopback_address(address: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(address) else {
        return false;
    };
    text.parse::<std::net::SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| text.parse::<std::net::IpAddr>())
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "first-token-0123456789";
    const B: &str = "second-token-abcdefghij";

    #[test]
    fn accepts_any_configured_token_for_rotation() {
        let t = Tokens::parse(&format!(" {A} ,{B},")).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.check(Some(format!("Bearer {A}").as_bytes())), Ok(()));
        assert_eq!(t.check(Some(format!("bearer {B}").as_bytes())), Ok(()));
        assert_eq!(t.check(Some(format!("BEARER  {B} ").as_bytes())), Ok(()));
    }

    #[test]
    fn refuses_missing_malformed_and_wrong() {
        let t = Tokens::parse(A).unwrap();
        assert_eq!(t.check(None), Err(Refusal::Missing));
        assert_eq!(t.check(Some(b"")), Err(Refusal::NotBearer));
        assert_eq!(t.check(Some(A.as_bytes())), Err(Refusal::NotBearer));
        assert_eq!(
            t.check(Some(format!("Basic {A}").as_bytes())),
            Err(Refusal::NotBearer)
        );
        assert_eq!(t.check(Some(b"Bearer nope")), Err(Refusal::WrongToken));
        assert_eq!(
            t.check(Some(format!("Bearer {A}x").as_bytes())),
            Err(Refusal::WrongToken)
        );
        assert_eq!(
            t.check(Some(format!("Bearer {}", &A[..10]).as_bytes())),
            Err(Refusal::WrongToken)
        );
        // Bytes that are not UTF-8 are just another wrong token (or scheme).
        assert_eq!(
            t.check(Some(b"Bearer caf\xe9-token-0123456789")),
            Err(Refusal::WrongToken)
        );
        assert_eq!(t.check(Some(b"Bear\xff token")), Err(Refusal::NotBearer));
        for r in [Refusal::Missing, Refusal::NotBearer, Refusal::WrongToken] {
            assert!(!r.diagnostics().contains(A));
        }
    }

    #[test]
    fn tokens_are_at_least_16_characters() {
        let sixteen = "0123456789abcdef";
        let t = Tokens::parse(sixteen).unwrap();
        assert_eq!((t.len(), t.is_empty()), (1, false));
        assert_eq!(
            t.check(Some(format!("Bearer {sixteen}").as_bytes())),
            Ok(())
        );
        let e = Tokens::parse(&sixteen[..15]).unwrap_err();
        assert!(e.contains("#1") && e.contains("shorter than 16"), "{e}");
    }

    #[test]
    fn a_token_configured_twice_is_still_accepted() {
        // During a rotation both settings may briefly hold the same token.
        let t = Tokens::parse(&format!("{A},{A}")).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.check(Some(format!("Bearer {A}").as_bytes())), Ok(()));
        let t = Tokens::parse(&format!("{A}\n{B}\n{A}")).unwrap();
        assert_eq!(t.check(Some(format!("Bearer {A}").as_bytes())), Ok(()));
        assert_eq!(t.check(Some(format!("Bearer {B}").as_bytes())), Ok(()));
    }

    #[test]
    fn refusals_say_what_to_send() {
        assert!(Refusal::Missing
            .diagnostics()
            .contains("send Authorization: Bearer <token>"));
        assert!(Refusal::NotBearer.diagnostics().contains("Bearer scheme"));
        assert!(Refusal::WrongToken.diagnostics().contains("not accepted"));
    }

    #[test]
    fn only_loopback_addresses_are_local() {
        for local in [
            "127.0.0.1:5000",
            "127.8.9.10:1",
            "[::1]:443",
            "::1",
            "127.0.0.1",
        ] {
            assert!(is_loopback_address(local.as_bytes()), "{local}");
        }
        for remote in [
            "10.0.0.1:5000",
            "[fd00::1]:1",
            "0.0.0.0:1",
            "",
            "localhost:1",
            "\u{ff}",
        ] {
            assert!(!is_loopback_address(remote.as_bytes()), "{remote}");
        }
        assert!(!is_loopback_address(b"127.0.0.1\xff"));
    }

    #[test]
    fn bad_configuration_is_named_without_the_token() {
        assert!(Tokens::parse("").unwrap_err().contains("empty"));
        let e = Tokens::parse(&format!("{A},tiny")).unwrap_err();
        assert!(e.contains("#2") && !e.contains("tiny"), "{e}");
        let e = Tokens::parse("token with spaces inside it").unwrap_err();
        assert!(e.contains("#1") && !e.contains("spaces"), "{e}");
        assert_eq!(
            format!("{:?}", Tokens::parse(A).unwrap()),
            "Tokens(1 configured)"
        );
    }
}

#[cfg(test)]
mod token_sources {
    use super::*;

    const ENV_TOKEN: &str = "token-from-the-environment-0001";
    const FILE_TOKEN: &str = "token-named-by-its-digest-0002";

    fn bearer(token: &str) -> Vec<u8> {
        format!("Bearer {token}").into_bytes()
    }

    #[test]
    fn digests_and_environment_tokens_are_accepted_together_or_alone() {
        let file_digest = digest(FILE_TOKEN.as_bytes());
        let both = Tokens::from_sources(ENV_TOKEN, &[file_digest]).unwrap();
        assert_eq!(both.len(), 2);
        assert_eq!(both.check(Some(&bearer(ENV_TOKEN))), Ok(()));
        assert_eq!(both.check(Some(&bearer(FILE_TOKEN))), Ok(()));
        assert_eq!(
            both.check(Some(&bearer("some-other-token-of-length"))),
            Err(Refusal::WrongToken)
        );
        let digests_only = Tokens::from_sources(" ,\n, ", &[file_digest]).unwrap();
        assert_eq!(digests_only.check(Some(&bearer(FILE_TOKEN))), Ok(()));
        assert_eq!(
            digests_only.check(Some(&bearer(ENV_TOKEN))),
            Err(Refusal::WrongToken)
        );
    }

    #[test]
    fn no_source_at_all_or_a_bad_environment_token_is_an_error() {
        let none = Tokens::from_sources("", &[]).unwrap_err();
        assert!(none.contains("inbound_token_sha256"), "{none}");
        let short = Tokens::from_sources("short", &[digest(FILE_TOKEN.as_bytes())]).unwrap_err();
        assert!(short.contains("shorter than 16"), "{short}");
    }
}
