//! The `metadata` fault setting: how `GET /datastore/{id}/r4/metadata` (the CapabilityStatement)
//! misbehaves. It stays in force until the settings change; the `next` queue, the rates, the
//! rate limit and `latency_ms` never touch that endpoint.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The body of a `garbage` answer: served as `application/fhir+json`, yet not JSON.
pub const GARBAGE_BODY: &[u8] = b"<html>maintenance</html>";

/// One way the CapabilityStatement endpoint misbehaves, written `"500"`, `"garbage"`,
/// `"empty"` or `"no-interactions"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum MetadataFault {
    /// `500` with an OperationOutcome (code `exception`).
    ServerError,
    /// `200`, `application/fhir+json`, [`GARBAGE_BODY`].
    Garbage,
    /// `200`, a CapabilityStatement whose `rest` lists no resources.
    Empty,
    /// `200`, a CapabilityStatement listing the types without their `interaction` arrays.
    NoInteractions,
}

impl MetadataFault {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "500" => Ok(MetadataFault::ServerError),
            "garbage" => Ok(MetadataFault::Garbage),
            "empty" => Ok(MetadataFault::Empty),
            "no-interactions" => Ok(MetadataFault::NoInteractions),
            other => Err(format!(
                "unknown metadata fault \"{other}\": expected \"500\", \"garbage\", \"empty\", \
                 \"no-interactions\" or null"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MetadataFault::ServerError => "500",
            MetadataFault::Garbage => "garbage",
            MetadataFault::Empty => "empty",
            MetadataFault::NoInteractions => "no-interactions",
        }
    }
}

impl fmt::Display for MetadataFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for MetadataFault {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        MetadataFault::parse(&s)
    }
}

impl From<MetadataFault> for String {
    fn from(f: MetadataFault) -> String {
        f.as_str().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in ["500", "garbage", "empty", "no-interactions"] {
            assert_eq!(MetadataFault::parse(s).unwrap().to_string(), s);
        }
        for bad in ["", "503", "Garbage", "no_interactions"] {
            let e = MetadataFault::parse(bad).unwrap_err();
            assert!(e.contains("expected \"500\", \"garbage\""), "{bad}: {e}");
        }
        assert!(serde_json::from_slice::<serde_json::Value>(GARBAGE_BODY).is_err());
    }
}
