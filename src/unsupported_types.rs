//! Resource types HealthLake does not support: who says so, and the memory of what HealthLake
//! answered.
//!
//! A write is answered `unsupported-type` (200, never retried) without calling HealthLake when
//! [`decide`] finds its type unsupported: configured so (`unsupported_types`), absent from
//! HealthLake's CapabilityStatement for that interaction ([`crate::discovery`]), or learned from
//! an earlier `400 not-supported` answer and not expired. Learned entries live in Envoy's shared
//! data, one key per type, the value being the expiry in Unix seconds as ASCII digits, so that
//! every worker answers the type locally until the entry expires (a type HealthLake starts
//! supporting is picked up again).

use crate::plan::Operation;

/// The response header, also logged as `type_support`, saying on whose word a write was
/// answered `unsupported-type`.
pub const TYPE_SUPPORT_HEADER: &str = "x-healthlake-type-support";

/// On whose word a type is unsupported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    /// The relay's configuration (`unsupported_types`).
    Configured,
    /// HealthLake's CapabilityStatement does not list the type with the interaction.
    CapabilityStatement,
    /// HealthLake answered an earlier write of the type `400 not-supported`.
    Learned,
    /// HealthLake answered this write `400 not-supported`.
    HealthLake,
}

impl Unsupported {
    /// The value of [`TYPE_SUPPORT_HEADER`].
    pub const fn as_str(self) -> &'static str {
        match self {
            Unsupported::Configured => "configured",
            Unsupported::CapabilityStatement => "capability-statement",
            Unsupported::Learned => "learned",
            Unsupported::HealthLake => "healthlake",
        }
    }

    /// Why, for the diagnostics of the answer.
    pub fn reason(self, op: Operation) -> String {
        match self {
            Unsupported::Configured => {
                "the relay is configured to treat it as unsupported (unsupported_types)".to_owned()
            }
            Unsupported::CapabilityStatement => format!(
                "HealthLake's CapabilityStatement does not list it with the {} interaction",
                match op {
                    Operation::Put => "update",
                    Operation::Delete => "delete",
                }
            ),
            Unsupported::Learned => {
                "HealthLake answered an earlier write of this type 400 not-supported".to_owned()
            }
            Unsupported::HealthLake => "HealthLake answered 400 not-supported".to_owned(),
        }
    }
}

/// Whether a write is answered `unsupported-type` without calling HealthLake, and on whose word:
/// the configuration, then the CapabilityStatement (`discovered`: whether it allows the write,
/// `None` when none is in use), then what HealthLake answered earlier (`learned`, asked last: it
/// reads shared data). A type the CapabilityStatement lists but HealthLake refused since is
/// learned: HealthLake's answer is the later word.
pub fn decide(
    configured: bool,
    discovered: Option<bool>,
    learned: impl FnOnce() -> bool,
) -> Option<Unsupported> {
    if configured {
        Some(Unsupported::Configured)
    } else if discovered == Some(false) {
        Some(Unsupported::CapabilityStatement)
    } else if learned() {
        Some(Unsupported::Learned)
    } else {
        None
    }
}

/// The shared-data key for a resource type.
pub fn shared_key(resource_type: &str) -> String {
    format!("healthlake_relay.unsupported.{resource_type}")
}

/// The shared-data value for an entry that expires at `expires_at` (Unix seconds).
pub fn encode(expires_at: u64) -> Vec<u8> {
    expires_at.to_string().into_bytes()
}

/// Whether a shared-data value marks the type as unsupported at `now` (Unix seconds).
/// Absent, unreadable or expired entries do not.
pub fn is_active(value: Option<&[u8]>, now: u64) -> bool {
    value
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|expires_at| now < expires_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn entries_expire() {
        let v = encode(1_000);
        assert!(is_active(Some(&v), 999));
        assert!(!is_active(Some(&v), 1_000));
        assert!(!is_active(None, 0));
        assert!(!is_active(Some(b""), 0));
        assert!(!is_active(Some(b"x1"), 0));
        assert_eq!(shared_key("Basic"), "healthlake_relay.unsupported.Basic");
    }

    #[test]
    fn configuration_then_capability_statement_then_learning() {
        let asked = Cell::new(0);
        let learned = |answer: bool| {
            let asked = &asked;
            move || {
                asked.set(asked.get() + 1);
                answer
            }
        };
        assert_eq!(
            decide(true, Some(true), learned(true)),
            Some(Unsupported::Configured)
        );
        assert_eq!(
            decide(false, Some(false), learned(true)),
            Some(Unsupported::CapabilityStatement)
        );
        assert_eq!(asked.get(), 0, "shared data is read only when it decides");
        assert_eq!(
            decide(false, Some(true), learned(true)),
            Some(Unsupported::Learned)
        );
        assert_eq!(
            decide(false, None, learned(true)),
            Some(Unsupported::Learned)
        );
        assert_eq!(decide(false, None, learned(false)), None);
        assert_eq!(decide(false, Some(true), learned(false)), None);
        assert_eq!(asked.get(), 4);
    }

    #[test]
    fn reasons_name_the_interaction_and_the_source() {
        assert!(Unsupported::CapabilityStatement
            .reason(Operation::Delete)
            .contains("delete interaction"));
        assert!(Unsupported::CapabilityStatement
            .reason(Operation::Put)
            .contains("update interaction"));
        assert!(Unsupported::Configured
            .reason(Operation::Put)
            .contains("unsupported_types"));
        assert_eq!(
            Unsupported::CapabilityStatement.as_str(),
            "capability-statement"
        );
        assert_eq!(Unsupported::HealthLake.as_str(), "healthlake");
    }
}
