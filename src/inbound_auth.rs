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

fn digest(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(token.as_bytes()));
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
            digests: tokens.into_iter().map(digest).collect(),
        })
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Checks an `Authorization` header value. Every configured token is compared, whatever
    /// matches, so the time taken does not depend on which one (if any) does.
    pub fn check(&self, authorization: Option<&str>) -> Result<(), Refusal> {
        let value = authorization.ok_or(Refusal::Missing)?.trim();
        let (scheme, token) = value.split_once(' ').ok_or(Refusal::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Refusal::NotBearer);
        }
        let presented = digest(token.trim());
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

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "first-token-0123456789";
    const B: &str = "second-token-abcdefghij";

    #[test]
    fn accepts_any_configured_token_for_rotation() {
        let t = Tokens::parse(&format!(" {A} ,{B},")).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.check(Some(&format!("Bearer {A}"))), Ok(()));
        assert_eq!(t.check(Some(&format!("bearer {B}"))), Ok(()));
        assert_eq!(t.check(Some(&format!("BEARER  {B} "))), Ok(()));
    }

    #[test]
    fn refuses_missing_malformed_and_wrong() {
        let t = Tokens::parse(A).unwrap();
        assert_eq!(t.check(None), Err(Refusal::Missing));
        assert_eq!(t.check(Some("")), Err(Refusal::NotBearer));
        assert_eq!(t.check(Some(A)), Err(Refusal::NotBearer));
        assert_eq!(
            t.check(Some(&format!("Basic {A}"))),
            Err(Refusal::NotBearer)
        );
        assert_eq!(t.check(Some("Bearer nope")), Err(Refusal::WrongToken));
        assert_eq!(
            t.check(Some(&format!("Bearer {A}x"))),
            Err(Refusal::WrongToken)
        );
        assert_eq!(
            t.check(Some(&format!("Bearer {}", &A[..10]))),
            Err(Refusal::WrongToken)
        );
        for r in [Refusal::Missing, Refusal::NotBearer, Refusal::WrongToken] {
            assert!(!r.diagnostics().contains(A));
        }
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
