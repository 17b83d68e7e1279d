//! Memory of resource types HealthLake said it does not support.
//!
//! Once HealthLake answered a type with `400 not-supported`, later writes of that type are answered
//! `unsupported-type` locally, by every Envoy worker, until the entry expires (so a type HealthLake
//! starts supporting is picked up again). The entries live in Envoy's shared data, one key per
//! type, the value being the expiry in Unix seconds as ASCII digits.

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
}
