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

/// What HealthLake's CapabilityStatement in use says of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    /// Whether it lists the type with the write's interaction.
    pub allows: bool,
    /// When it was read (Unix seconds).
    pub read_at: u64,
}

/// Whether a write is answered `unsupported-type` without calling HealthLake, and on whose word:
/// the configuration; then the CapabilityStatement in use (`listed`, `None` when none is), which
/// decides unless HealthLake answered an earlier write of the type `400 not-supported` after it
/// was read (`learned_at`: when, in Unix seconds; asked last, it reads shared data): the later
/// word wins, so that a type HealthLake stops or starts supporting is followed either way.
pub fn decide(
    configured: bool,
    listed: Option<Listed>,
    learned_at: impl FnOnce() -> Option<u64>,
) -> Option<Unsupported> {
    if configured {
        return Some(Unsupported::Configured);
    }
    match (listed, learned_at) {
        (Some(l), _) if !l.allows => Some(Unsupported::CapabilityStatement),
        (Some(l), learned_at) => learned_at()
            .filter(|at| *at >= l.read_at)
            .map(|_| Unsupported::Learned),
        (None, learned_at) => learned_at().map(|_| Unsupported::Learned),
    }
}

/// Whether a `400 not-supported` answer is recorded: when nothing is learned for the type, or
/// what is was learned before the CapabilityStatement in use was read (`statement_read_at`, Unix
/// seconds), which lists the type and would otherwise outweigh it: the refusal is the later word.
pub fn records(learned_at: Option<u64>, statement_read_at: Option<u64>) -> bool {
    learned_at.is_none_or(|at| statement_read_at.is_some_and(|read| at < read))
}

/// The shared-data key for a resource type.
pub fn shared_key(resource_type: &str) -> String {
    format!("healthlake_relay.unsupported.{resource_type}")
}

/// The shared-data value for an entry that expires at `expires_at` (Unix seconds).
pub fn encode(expires_at: u64) -> Vec<u8> {
    expires_at.to_string().into_bytes()
}

/// When an entry still active at `now` was learned (Unix seconds), entries living `ttl` seconds;
/// `None` for absent, unreadable or expired entries.
pub fn learned_at(value: Option<&[u8]>, now: u64, ttl: u64) -> Option<u64> {
    expiry(value)
        .filter(|expires_at| now < *expires_at)
        .map(|expires_at| expires_at.saturating_sub(ttl))
}

fn expiry(value: Option<&[u8]>) -> Option<u64> {
    value
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.parse::<u64>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn entries_expire() {
        let v = encode(1_000);
        assert!(learned_at(Some(&v), 999, 1).is_some());
        assert!(learned_at(Some(&v), 1_000, 1).is_none());
        assert!(learned_at(None, 0, 1).is_none());
        assert!(learned_at(Some(b""), 0, 1).is_none());
        assert!(learned_at(Some(b"x1"), 0, 1).is_none());
        assert_eq!(shared_key("Basic"), "healthlake_relay.unsupported.Basic");
    }

    #[test]
    fn learned_entries_know_when_they_were_learned() {
        let v = encode(1_000);
        assert_eq!(learned_at(Some(&v), 999, 600), Some(400));
        assert_eq!(learned_at(Some(&v), 1_000, 600), None);
        assert_eq!(learned_at(Some(b"x"), 0, 600), None);
        assert_eq!(learned_at(None, 0, 600), None);
    }

    #[test]
    fn configuration_then_the_later_of_statement_and_learning() {
        let asked = Cell::new(0);
        let learned = |at: Option<u64>| {
            let asked = &asked;
            move || {
                asked.set(asked.get() + 1);
                at
            }
        };
        let listed = |allows| {
            Some(Listed {
                allows,
                read_at: 100,
            })
        };
        assert_eq!(
            decide(true, listed(true), learned(Some(200))),
            Some(Unsupported::Configured)
        );
        assert_eq!(
            decide(false, listed(false), learned(Some(200))),
            Some(Unsupported::CapabilityStatement)
        );
        assert_eq!(asked.get(), 0, "shared data is read only when it decides");
        // HealthLake refused the type after the statement was read: its answer is later.
        assert_eq!(
            decide(false, listed(true), learned(Some(100))),
            Some(Unsupported::Learned)
        );
        // The statement read since lists it again: it is later.
        assert_eq!(decide(false, listed(true), learned(Some(99))), None);
        assert_eq!(
            decide(false, None, learned(Some(1))),
            Some(Unsupported::Learned)
        );
        assert_eq!(decide(false, None, learned(None)), None);
        assert_eq!(decide(false, listed(true), learned(None)), None);
        assert_eq!(asked.get(), 5);
    }

    #[test]
    fn a_refusal_is_recorded_unless_a_later_one_is() {
        assert!(records(None, None));
        assert!(records(None, Some(100)));
        assert!(
            !records(Some(100), None),
            "one worker records, repeats do not"
        );
        assert!(!records(Some(100), Some(100)));
        assert!(
            records(Some(99), Some(100)),
            "the statement read since outweighed it"
        );
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
