//! The relay's verdict on each request: one fixed string per outcome, used in the access log
//! (`outcome`), the `x-healthlake-outcome` response header and the stats.

use crate::plan::Operation;

/// Every verdict the relay gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// HealthLake accepted a PUT.
    Delivered,
    /// HealthLake accepted a DELETE.
    Deleted,
    /// A read (GET/HEAD) answered locally: reads are served by Smile CDR.
    ReadDropped,
    /// No usable credentials: nothing was forwarded.
    NoCredentials,
    /// The request was refused before anything was signed.
    InvalidRequest,
    /// HealthLake throttled the request.
    Throttled,
    /// HealthLake refused the signature or the credentials.
    AuthFailed,
    /// HealthLake (or the way to it) failed: 5xx, reset, timeout.
    UpstreamError,
    /// HealthLake refused the request with another 4xx.
    Rejected,
}

impl Outcome {
    /// Every outcome, for defining one stat each.
    pub const ALL: [Outcome; 9] = [
        Outcome::Delivered,
        Outcome::Deleted,
        Outcome::ReadDropped,
        Outcome::NoCredentials,
        Outcome::InvalidRequest,
        Outcome::Throttled,
        Outcome::AuthFailed,
        Outcome::UpstreamError,
        Outcome::Rejected,
    ];

    /// The fixed string operators see.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Deleted => "deleted",
            Outcome::ReadDropped => "read-dropped",
            Outcome::NoCredentials => "no-credentials",
            Outcome::InvalidRequest => "invalid-request",
            Outcome::Throttled => "throttled",
            Outcome::AuthFailed => "auth-failed",
            Outcome::UpstreamError => "upstream-error",
            Outcome::Rejected => "rejected",
        }
    }

    /// Position in [`Outcome::ALL`], for per-outcome tables.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Classifies HealthLake's answer to a forwarded write by its status.
pub fn classify(op: Operation, status: u16) -> Outcome {
    match (status, op) {
        (200..=299, Operation::Put) => Outcome::Delivered,
        (200..=299, Operation::Delete) => Outcome::Deleted,
        (429, _) => Outcome::Throttled,
        (401 | 403, _) => Outcome::AuthFailed,
        (400..=499, _) => Outcome::Rejected,
        _ => Outcome::UpstreamError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_fixed_and_distinct() {
        let names: Vec<_> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(o.index(), i);
        }
        assert_eq!(Outcome::ReadDropped.as_str(), "read-dropped");
    }

    #[test]
    fn classification_by_status() {
        assert_eq!(classify(Operation::Put, 200), Outcome::Delivered);
        assert_eq!(classify(Operation::Put, 201), Outcome::Delivered);
        assert_eq!(classify(Operation::Delete, 204), Outcome::Deleted);
        assert_eq!(classify(Operation::Put, 429), Outcome::Throttled);
        assert_eq!(classify(Operation::Put, 403), Outcome::AuthFailed);
        assert_eq!(classify(Operation::Put, 400), Outcome::Rejected);
        assert_eq!(classify(Operation::Delete, 503), Outcome::UpstreamError);
        assert_eq!(classify(Operation::Put, 302), Outcome::UpstreamError);
    }
}
