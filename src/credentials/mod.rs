//! AWS credentials the relay signs with, and where they come from: the AWS SDKs' default chain
//! (environment keys, web identity, container credentials, EC2 instance metadata), one source
//! chosen at configuration, optionally with a role assumed on top.
//!
//! - one module per source: [`web_identity`], [`container`], [`imds`], [`assume_role`] (the
//!   environment's keys are read here), each building its calls; [`sts_answer`] and
//!   [`json_answer`] read the two answer formats;
//! - [`fetch`]: one fetch, the calls in order; [`refresh`]: when to refresh, shared by all
//!   workers; [`provider`]: the per-worker provider over a small host interface.
//!
//! Credentials are never printed: `Debug` shows the access key id's last four characters only.

pub mod assume_role;
pub mod call;
pub mod container;
pub mod fetch;
pub mod imds;
pub mod json_answer;
pub mod provider;
pub mod refresh;
pub mod sts_answer;
pub mod web_identity;

use std::fmt;
use std::time::{Duration, SystemTime};

/// An ISO-8601 `Expiration` as a time.
pub fn expiry(text: &str) -> Option<SystemTime> {
    crate::instant::parse(text)
        .and_then(|nanos| u64::try_from(nanos / 1_000_000).ok())
        .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

/// A set of AWS credentials: long-lived keys, or temporary ones with a session token and expiry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// When temporary credentials stop being valid; `None` for long-lived keys.
    pub expires_at: Option<SystemTime>,
}

/// Why there are no credentials to sign with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// The named variable is not set (or empty).
    Missing(&'static str),
    /// The credentials expired (or expire too soon to reach AWS in time).
    Expired,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::Missing(var) => write!(
                f,
                "no AWS credentials: {var} is not set in the plugin's environment \
                 (vm_config.environment_variables)"
            ),
            Unavailable::Expired => write!(f, "the AWS credentials have expired"),
        }
    }
}

impl Credentials {
    /// Reads `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optionally `AWS_SESSION_TOKEN`
    /// through `lookup` (the process environment in the filter; a map in tests).
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Credentials, Unavailable> {
        let get = |name: &'static str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let access_key_id =
            get("AWS_ACCESS_KEY_ID").ok_or(Unavailable::Missing("AWS_ACCESS_KEY_ID"))?;
        let secret_access_key =
            get("AWS_SECRET_ACCESS_KEY").ok_or(Unavailable::Missing("AWS_SECRET_ACCESS_KEY"))?;
        Ok(Credentials {
            access_key_id,
            secret_access_key,
            session_token: get("AWS_SESSION_TOKEN"),
            expires_at: None,
        })
    }

    /// Whether a request signed at `now` may still use these credentials.
    pub fn usable_at(&self, now: SystemTime) -> Result<(), Unavailable> {
        match self.expires_at {
            Some(expiry) if expiry <= now => Err(Unavailable::Expired),
            _ => Ok(()),
        }
    }

    /// The last four characters of the access key id: enough to tell keys apart in a log.
    pub fn key_hint(&self) -> &str {
        let id = self.access_key_id.as_str();
        let start = id.char_indices().rev().nth(3).map(|(i, _)| i).unwrap_or(0);
        id.get(start..).unwrap_or("")
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &format_args!("…{}", self.key_hint()))
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn reads_keys_and_optional_token() {
        let c = Credentials::from_env(env(&[
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE1234"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
        ]))
        .unwrap();
        assert_eq!(c.session_token, None);
        let c = Credentials::from_env(env(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_SESSION_TOKEN", "tok"),
        ]))
        .unwrap();
        assert_eq!(c.session_token.as_deref(), Some("tok"));
    }

    #[test]
    fn missing_or_blank_variables_are_named() {
        assert_eq!(
            Credentials::from_env(env(&[])).unwrap_err(),
            Unavailable::Missing("AWS_ACCESS_KEY_ID")
        );
        assert_eq!(
            Credentials::from_env(env(&[
                ("AWS_ACCESS_KEY_ID", "AKID"),
                ("AWS_SECRET_ACCESS_KEY", "  ")
            ]))
            .unwrap_err(),
            Unavailable::Missing("AWS_SECRET_ACCESS_KEY")
        );
    }

    #[test]
    fn unavailability_is_explained() {
        assert_eq!(
            Unavailable::Missing("AWS_SECRET_ACCESS_KEY").to_string(),
            "no AWS credentials: AWS_SECRET_ACCESS_KEY is not set in the plugin's environment \
             (vm_config.environment_variables)"
        );
        assert_eq!(
            Unavailable::Expired.to_string(),
            "the AWS credentials have expired"
        );
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = Credentials {
            access_key_id: "AKIDEXAMPLE9876".into(),
            secret_access_key: "wJalrXUtnFEMI".into(),
            session_token: Some("FQoGZXIvYXdzE".into()),
            expires_at: None,
        };
        let s = format!("{c:?}");
        assert!(s.contains("9876"));
        assert!(!s.contains("AKIDEXAMPLE"));
        assert!(!s.contains("wJalr"));
        assert!(!s.contains("FQoG"));
        assert_eq!(c.key_hint(), "9876");
    }

    #[test]
    fn expiry_is_enforced() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut c = Credentials::from_env(env(&[
            ("AWS_ACCESS_KEY_ID", "AK"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ]))
        .unwrap();
        assert!(c.usable_at(now).is_ok());
        assert_eq!(c.key_hint(), "AK");
        c.expires_at = Some(now);
        assert_eq!(c.usable_at(now), Err(Unavailable::Expired));
        c.expires_at = Some(now + Duration::from_secs(60));
        assert!(c.usable_at(now).is_ok());
    }
}
