//! The fault settings, as sent to `PUT /_emulator/faults` or given with `--faults FILE`:
//! parsing, validation and their JSON form.

use serde::{Deserialize, Serialize};

use super::kind::{Fault, MAX_DELAY_MS};
use super::metadata::MetadataFault;
use crate::fhir;

/// Rates may add up to 1 give or take floating-point rounding (`0.1 + 0.2 + 0.7`).
const RATE_SUM_TOLERANCE: f64 = 1e-9;

/// What to inject. Every field is optional; absent means off.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSettings {
    /// Resource types answered with HealthLake's `400 not-supported` OperationOutcome.
    #[serde(default)]
    pub unsupported_types: Vec<String>,
    /// Faults for the next verified data-plane requests, one each, in order.
    #[serde(default)]
    pub next: Vec<Fault>,
    /// Probability of a 500/502/503/504 per verified data-plane request.
    pub error_rate: Option<f64>,
    /// Probability of a connection reset per verified data-plane request.
    pub reset_rate: Option<f64>,
    /// Probability of a `ThrottlingException` per verified data-plane request.
    pub throttle_rate: Option<f64>,
    /// Requests beyond this rate (a token bucket of this size, refilled at this rate per
    /// second) get a `ThrottlingException`.
    pub throttle_above_rps: Option<u32>,
    /// Added before every data-plane answer, in milliseconds.
    pub latency_ms: Option<u64>,
    /// Seed of the random draws behind the rates (0 when absent).
    pub seed: Option<u64>,
    /// How `GET /datastore/{id}/r4/metadata` misbehaves, until changed (checked by
    /// deserialisation: `"500"`, `"garbage"`, `"empty"` or `"no-interactions"`).
    pub metadata: Option<MetadataFault>,
}

impl FaultSettings {
    /// Parses and validates a JSON body. Errors are one line, meant for the caller.
    pub fn from_json(body: &[u8]) -> Result<Self, String> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(
                "the body is empty; send a JSON object, e.g. {} for no faults or {\"next\":[\"503\"]}"
                    .to_string(),
            );
        }
        let settings: FaultSettings = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every range; the JSON shape, and each `next` entry (`Fault::parse`: no
    /// `unsupported-type`, delays within `MAX_DELAY_MS`), are already checked by deserialisation.
    pub fn validate(&self) -> Result<(), String> {
        for t in &self.unsupported_types {
            if !fhir::is_valid_resource_type(t) {
                return Err(format!(
                    "unsupported_types: \"{t}\" is not a FHIR resource type name ([A-Z][A-Za-z]*, at most 64 letters)"
                ));
            }
        }
        let mut sum = 0.0;
        for (name, rate) in [
            ("error_rate", self.error_rate),
            ("reset_rate", self.reset_rate),
            ("throttle_rate", self.throttle_rate),
        ] {
            let Some(rate) = rate else { continue };
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0.0 and 1.0, not {rate}"));
            }
            sum += rate;
        }
        if sum > 1.0 + RATE_SUM_TOLERANCE {
            return Err(format!(
                "error_rate + reset_rate + throttle_rate must be at most 1.0, not {sum}"
            ));
        }
        if self.throttle_above_rps == Some(0) {
            return Err(
                "throttle_above_rps must be at least 1 (leave it out to turn rate limiting off)"
                    .to_string(),
            );
        }
        if let Some(ms) = self.latency_ms {
            if ms > MAX_DELAY_MS {
                return Err(format!(
                    "latency_ms must be at most {MAX_DELAY_MS}, not {ms}"
                ));
            }
        }
        Ok(())
    }

    /// Adds resource types to `unsupported_types` (skipping ones already there), checking each.
    pub fn add_unsupported_types<'a>(
        &mut self,
        types: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), String> {
        for t in types {
            if !fhir::is_valid_resource_type(t) {
                return Err(format!("\"{t}\" is not a FHIR resource type name"));
            }
            if !self.unsupported_types.iter().any(|u| u == t) {
                self.unsupported_types.push(t.to_string());
            }
        }
        Ok(())
    }

    /// True when nothing is injected.
    pub fn is_off(&self) -> bool {
        self.unsupported_types.is_empty()
            && self.next.is_empty()
            && self.error_rate.unwrap_or(0.0) == 0.0
            && self.reset_rate.unwrap_or(0.0) == 0.0
            && self.throttle_rate.unwrap_or(0.0) == 0.0
            && self.throttle_above_rps.is_none()
            && self.latency_ms.unwrap_or(0) == 0
            && self.metadata.is_none()
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;
    use crate::faults::kind::ThrottleForm;

    fn parse(s: &str) -> Result<FaultSettings, String> {
        FaultSettings::from_json(s.as_bytes())
    }

    #[test]
    fn parses_the_documented_example() {
        let s = parse(
            r#"{
                "unsupported_types": ["Basic", "Subscription"],
                "next": ["503", "500", "reset", "throttle-429", "throttle-400", "expired-token",
                         "invalid-signature", "delay:1500"],
                "error_rate": 0.05,
                "reset_rate": 0.02,
                "throttle_rate": 0.1,
                "throttle_above_rps": 200,
                "latency_ms": 0,
                "seed": 42,
                "metadata": "no-interactions"
            }"#,
        )
        .unwrap();
        assert_eq!(s.unsupported_types, ["Basic", "Subscription"]);
        assert_eq!(
            s.next,
            [
                Fault::ServerError(StatusCode::SERVICE_UNAVAILABLE),
                Fault::ServerError(StatusCode::INTERNAL_SERVER_ERROR),
                Fault::Reset,
                Fault::Throttle(ThrottleForm::TooManyRequests),
                Fault::Throttle(ThrottleForm::BadRequest),
                Fault::ExpiredToken,
                Fault::InvalidSignature,
                Fault::Delay(1500),
            ]
        );
        assert_eq!(s.error_rate, Some(0.05));
        assert_eq!(s.throttle_above_rps, Some(200));
        assert_eq!(s.seed, Some(42));
        assert_eq!(s.metadata, Some(MetadataFault::NoInteractions));
        assert!(!s.is_off());
        assert!(!parse(r#"{"metadata":"500"}"#).unwrap().is_off());
    }

    #[test]
    fn empty_object_and_nulls_are_off() {
        let s = parse("{}").unwrap();
        assert_eq!(s, FaultSettings::default());
        assert!(s.is_off());
        let s =
            parse(r#"{"error_rate":null,"seed":null,"latency_ms":0,"next":[],"metadata":null}"#)
                .unwrap();
        assert!(s.is_off());
    }

    #[test]
    fn round_trips_through_json() {
        let s = parse(
            r#"{"next":["delay:20","599"],"reset_rate":1,"seed":18446744073709551615,"metadata":"garbage"}"#,
        )
        .unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"unsupported_types":[],"next":["delay:20","599"],"error_rate":null,"reset_rate":1.0,"throttle_rate":null,"throttle_above_rps":null,"latency_ms":null,"seed":18446744073709551615,"metadata":"garbage"}"#
        );
        assert_eq!(parse(&json).unwrap(), s);
    }

    #[test]
    fn rejects_bad_settings_clearly() {
        for (body, needle) in [
            ("", "body is empty"),
            ("[]", "expected struct FaultSettings"),
            ("{", "EOF"),
            (r#"{"eror_rate":0.1}"#, "unknown field `eror_rate`"),
            (r#"{"next":"503"}"#, "expected a sequence"),
            (r#"{"next":["teapot"]}"#, "unknown fault \"teapot\""),
            (r#"{"next":["399"]}"#, "400..599"),
            (r#"{"next":["delay:700000"]}"#, "at most 600000"),
            (r#"{"next":["unsupported-type"]}"#, "unsupported_types"),
            (
                r#"{"unsupported_types":["basic"]}"#,
                "\"basic\" is not a FHIR resource type",
            ),
            (r#"{"unsupported_types":"Basic"}"#, "expected a sequence"),
            (
                r#"{"error_rate":1.5}"#,
                "error_rate must be between 0.0 and 1.0",
            ),
            (r#"{"reset_rate":-0.1}"#, "reset_rate must be between"),
            (r#"{"throttle_rate":"0.1"}"#, "invalid type: string"),
            (
                r#"{"error_rate":0.6,"throttle_rate":0.6}"#,
                "must be at most 1.0",
            ),
            (r#"{"throttle_above_rps":0}"#, "at least 1"),
            (r#"{"throttle_above_rps":1.5}"#, "invalid type"),
            (r#"{"throttle_above_rps":-1}"#, "invalid value"),
            (
                r#"{"latency_ms":600001}"#,
                "latency_ms must be at most 600000",
            ),
            (r#"{"seed":-1}"#, "invalid value"),
            (
                r#"{"metadata":"teapot"}"#,
                "unknown metadata fault \"teapot\": expected \"500\", \"garbage\", \"empty\", \"no-interactions\" or null",
            ),
            (r#"{"metadata":500}"#, "invalid type: integer"),
        ] {
            let e = parse(body).unwrap_err();
            assert!(e.contains(needle), "{body}: {e}");
        }
        // Rates adding up to exactly 1 pass despite rounding.
        parse(r#"{"error_rate":0.1,"reset_rate":0.2,"throttle_rate":0.7}"#).unwrap();
    }

    #[test]
    fn adds_unsupported_types_once() {
        let mut s = parse(r#"{"unsupported_types":["Basic"]}"#).unwrap();
        s.add_unsupported_types(["Subscription", "Basic"]).unwrap();
        assert_eq!(s.unsupported_types, ["Basic", "Subscription"]);
        assert!(s.add_unsupported_types(["not-a-type"]).is_err());
    }
}
