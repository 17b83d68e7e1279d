//! The plugin's configuration: the JSON in `envoy.yaml`'s `plugin_config.configuration`, parsed and
//! validated once when the plugin starts. A bad value yields one error naming the field and what is
//! expected; the glue logs it and refuses to start the plugin.

mod credentials;

pub use credentials::{
    check_role_arn, ContainerAuthorization, ContainerEndpoint, CredentialsConfig, Source,
    DEFAULT_FIRST_FETCH_WAIT_MS, DEFAULT_IMDS_HOST, DEFAULT_IMDS_TOKEN_TTL_SECONDS,
    DEFAULT_ROLE_DURATION_SECONDS, DEFAULT_SESSION_NAME, MAX_CHAINED_DURATION_SECONDS,
};
use serde::Deserialize;
use std::fmt;

/// Default largest request body the relay accepts (8 MiB). HealthLake resources of several MiB
/// (attachments inlined as base64) must pass; Envoy's buffer limits in `envoy.yaml` sit above it so
/// that the relay, not Envoy, answers oversize bodies with an OperationOutcome.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 8 * 1024 * 1024;

/// Largest `max_body_bytes` accepted (256 MiB): a body is held whole in the Wasm VM, whose memory
/// Envoy caps at 1 GiB.
pub const MAX_MAX_BODY_BYTES: u64 = 256 * 1024 * 1024;

/// Default bytes of request bodies one worker's VM holds at once (256 MiB, a quarter of the VM's
/// 1 GiB, leaving room for the copy of each chunk, allocator slack and everything else).
pub const DEFAULT_BODY_BUDGET_BYTES: u64 = 256 * 1024 * 1024;

/// What the budget and the transient copies of one body may take together: the VM's 1 GiB less
/// 128 MiB for the relay's own state and allocator slack. Besides the budget, one body may be
/// copied twice more at once (the chunk the host copies in, strings parsed out of the JSON), so
/// `body_budget_bytes + 2 * max_body_bytes` must stay within it.
pub const VM_BODY_ROOM_BYTES: u64 = 896 * 1024 * 1024;

/// Default time a resource type HealthLake called unsupported is answered locally (1 hour), after
/// which the next write of that type asks HealthLake again.
pub const DEFAULT_UNSUPPORTED_TYPE_TTL_SECONDS: u64 = 3600;

/// Default time between two reads of HealthLake's CapabilityStatement (1 hour); 0 turns
/// discovery off.
pub const DEFAULT_CAPABILITIES_REFRESH_SECONDS: u64 = 3600;

/// The Envoy cluster that reaches HealthLake, as `envoy.yaml` names it.
pub const DEFAULT_HEALTHLAKE_CLUSTER: &str = "healthlake";

/// Default `Retry-After` (seconds) on `throttled` answers when HealthLake sent none.
pub const DEFAULT_RETRY_AFTER_SECONDS: u64 = 5;

/// Default number of resources the version guard remembers (0 turns the guard off).
pub const DEFAULT_VERSION_GUARD_MAX_ENTRIES: usize = 100_000;

/// Default age after which the version guard forgets a resource (7 days).
pub const DEFAULT_VERSION_GUARD_MAX_AGE_SECONDS: u64 = 7 * 24 * 3600;

/// Default clock skew allowed between Smile CDR's `meta.lastUpdated` and the relay's clock (5
/// minutes, as SigV4 allows): a later `lastUpdated` is forwarded but not recorded by the guard.
pub const DEFAULT_VERSION_GUARD_CLOCK_SKEW_SECONDS: u64 = 300;

/// What the plugin accepts in its JSON configuration. Unknown fields are rejected, so that a typo
/// is an error rather than a silently ignored setting.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    region: Option<String>,
    datastore_id: Option<String>,
    healthlake_host: Option<String>,
    #[serde(default)]
    inbound_base_path: Option<String>,
    #[serde(default)]
    max_body_bytes: Option<u64>,
    #[serde(default)]
    body_budget_bytes: Option<u64>,
    #[serde(default)]
    unsupported_types: Option<Vec<String>>,
    #[serde(default)]
    unsupported_type_ttl_seconds: Option<u64>,
    #[serde(default)]
    capabilities_refresh_seconds: Option<u64>,
    #[serde(default)]
    healthlake_cluster: Option<String>,
    #[serde(default)]
    retry_after_seconds: Option<u64>,
    #[serde(default)]
    version_guard_max_entries: Option<usize>,
    #[serde(default)]
    version_guard_max_age_seconds: Option<u64>,
    #[serde(default)]
    version_guard_clock_skew_seconds: Option<u64>,
    #[serde(default)]
    assume_role: Option<credentials::RawAssumeRole>,
    #[serde(default)]
    credentials: Option<credentials::RawCredentials>,
    #[serde(default)]
    inbound_auth: Option<String>,
    #[serde(default)]
    inbound_token_sha256: Option<Vec<String>>,
}

/// How callers prove they are Smile CDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundAuth {
    /// A bearer token from `RELAY_INBOUND_TOKENS` (the default).
    Bearer,
    /// A client certificate, checked by Envoy's listener; the relay checks the connection used
    /// mutual TLS.
    MutualTls,
    /// Nobody is checked: only for a local demo on loopback.
    None,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// AWS region used in the SigV4 credential scope, e.g. `us-east-1`.
    pub region: String,
    /// The HealthLake data store id.
    pub datastore_id: String,
    /// The `:authority` sent to (and signed for) HealthLake, e.g.
    /// `healthlake.us-east-1.amazonaws.com` or `127.0.0.1:8080` for a local emulator.
    pub healthlake_host: String,
    /// Path prefix under which Smile CDR's subscription endpoint points at the relay (e.g. `/fhir`);
    /// empty when resources are addressed at the root. Never ends with `/`.
    pub inbound_base_path: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: u64,
    /// Most bytes of request bodies one worker holds at once; past it writes get `503
    /// overloaded`.
    pub body_budget_bytes: u64,
    /// Resource types answered `unsupported-type` without asking HealthLake (sorted).
    pub unsupported_types: Vec<String>,
    /// How long a type HealthLake called unsupported is answered locally.
    pub unsupported_type_ttl_seconds: u64,
    /// Time between two reads of HealthLake's CapabilityStatement; 0 when discovery is off.
    pub capabilities_refresh_seconds: u64,
    /// The Envoy cluster the relay's own calls to HealthLake (the CapabilityStatement) go
    /// through: the one the route sends writes to.
    pub healthlake_cluster: String,
    /// `Retry-After` on `throttled` answers when HealthLake sent none.
    pub retry_after_seconds: u64,
    /// Bounds of the version guard's memory; `None` when the guard is off.
    pub version_guard: Option<crate::versions::Limits>,
    /// Where the credentials come from, and a role assumed on top.
    pub credentials: CredentialsConfig,
    /// How callers are authenticated.
    pub inbound_auth: InboundAuth,
    /// SHA-256 digests of accepted bearer tokens (`inbound_token_sha256`, 64 hex digits each),
    /// besides the tokens in `RELAY_INBOUND_TOKENS`: a configuration can name the tokens without
    /// holding them.
    pub inbound_token_digests: Vec<[u8; 32]>,
    /// `/datastore/{datastore_id}/r4`, the upstream prefix every forwarded path starts with.
    pub upstream_prefix: String,
}

impl Config {
    /// Whether the configuration presets `resource_type` as unsupported.
    pub fn is_preset_unsupported(&self, resource_type: &str) -> bool {
        self.unsupported_types
            .binary_search_by(|t| t.as_str().cmp(resource_type))
            .is_ok()
    }
}

/// A configuration error: which field, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: &'static str,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid plugin configuration: field \"{}\": {}",
            self.field, self.problem
        )
    }
}

impl std::error::Error for ConfigError {}

fn err(field: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        problem: problem.into(),
    }
}

fn required(field: &'static str, value: Option<String>) -> Result<String, ConfigError> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        _ => Err(err(field, "is required and must be a non-empty string")),
    }
}

impl Config {
    /// Parses and validates the plugin configuration.
    pub fn from_json(bytes: &[u8]) -> Result<Config, ConfigError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(err(
                "configuration",
                "is empty; expected a JSON object with region, datastore_id and healthlake_host",
            ));
        }
        let raw: RawConfig = serde_json::from_slice(bytes).map_err(|e| {
            // serde names the unknown or mistyped field in its message.
            err("configuration", format!("is not valid: {e}"))
        })?;

        let region = required("region", raw.region)?;
        if !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(err(
                "region",
                format!("expected an AWS region name such as us-east-1, got {region:?}"),
            ));
        }

        let datastore_id = required("datastore_id", raw.datastore_id)?;
        if datastore_id.len() > 64
            || !datastore_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(err(
                "datastore_id",
                "expected a HealthLake data store id (letters, digits and '-', at most 64)",
            ));
        }

        let healthlake_host = required("healthlake_host", raw.healthlake_host)?;
        if healthlake_host.contains(['/', ' ', '@', '?', '#']) {
            return Err(err(
                "healthlake_host",
                format!(
                    "expected a host name with an optional port (no scheme or path), got {healthlake_host:?}"
                ),
            ));
        }

        let inbound_base_path = normalise_base_path(raw.inbound_base_path.unwrap_or_default())?;

        let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if !(1..=MAX_MAX_BODY_BYTES).contains(&max_body_bytes) {
            return Err(err(
                "max_body_bytes",
                format!(
                    "expected 1 to {MAX_MAX_BODY_BYTES} bytes (a body is held whole in the Wasm \
                     VM, whose memory Envoy caps at 1 GiB)"
                ),
            ));
        }
        let body_budget_bytes = raw.body_budget_bytes.unwrap_or(DEFAULT_BODY_BUDGET_BYTES);
        let most = VM_BODY_ROOM_BYTES - 2 * max_body_bytes;
        if !(max_body_bytes..=most).contains(&body_budget_bytes) {
            return Err(err(
                "body_budget_bytes",
                format!(
                    "expected max_body_bytes ({max_body_bytes}) to {most} bytes (the Wasm VM's \
                     1 GiB must hold the budget, two more copies of one body and the relay)"
                ),
            ));
        }

        let mut unsupported_types = raw.unsupported_types.unwrap_or_default();
        if let Some(bad) = unsupported_types
            .iter()
            .find(|t| !crate::fhir::is_r4_resource_type(t))
        {
            return Err(err(
                "unsupported_types",
                format!("expected FHIR R4 resource type names, got {bad:?}"),
            ));
        }
        unsupported_types.sort();
        unsupported_types.dedup();

        let unsupported_type_ttl_seconds = raw
            .unsupported_type_ttl_seconds
            .unwrap_or(DEFAULT_UNSUPPORTED_TYPE_TTL_SECONDS);
        if !(1..=7 * 24 * 3600).contains(&unsupported_type_ttl_seconds) {
            return Err(err(
                "unsupported_type_ttl_seconds",
                "expected a number of seconds from 1 to 604800 (7 days)",
            ));
        }
        let capabilities_refresh_seconds = raw
            .capabilities_refresh_seconds
            .unwrap_or(DEFAULT_CAPABILITIES_REFRESH_SECONDS);
        if capabilities_refresh_seconds > 24 * 3600 {
            return Err(err(
                "capabilities_refresh_seconds",
                "expected a number of seconds from 1 to 86400 (1 day), or 0 to turn discovery off",
            ));
        }
        let healthlake_cluster = credentials::cluster(
            "healthlake_cluster",
            raw.healthlake_cluster,
            DEFAULT_HEALTHLAKE_CLUSTER,
        )?;
        let retry_after_seconds = raw
            .retry_after_seconds
            .unwrap_or(DEFAULT_RETRY_AFTER_SECONDS);
        if !(1..=3600).contains(&retry_after_seconds) {
            return Err(err(
                "retry_after_seconds",
                "expected a number of seconds from 1 to 3600",
            ));
        }

        let max_entries = raw
            .version_guard_max_entries
            .unwrap_or(DEFAULT_VERSION_GUARD_MAX_ENTRIES);
        if max_entries > 10_000_000 {
            return Err(err(
                "version_guard_max_entries",
                "expected at most 10000000 (0 turns the version guard off)",
            ));
        }
        let max_age_seconds = raw
            .version_guard_max_age_seconds
            .unwrap_or(DEFAULT_VERSION_GUARD_MAX_AGE_SECONDS);
        if max_age_seconds == 0 {
            return Err(err(
                "version_guard_max_age_seconds",
                "expected a positive number of seconds",
            ));
        }
        let clock_skew_seconds = raw
            .version_guard_clock_skew_seconds
            .unwrap_or(DEFAULT_VERSION_GUARD_CLOCK_SKEW_SECONDS);
        if clock_skew_seconds > 24 * 3600 {
            return Err(err(
                "version_guard_clock_skew_seconds",
                "expected 0 to 86400 seconds",
            ));
        }
        let version_guard = (max_entries > 0).then_some(crate::versions::Limits {
            max_entries,
            max_age_seconds,
            clock_skew_seconds,
        });

        let assume_role = match raw.assume_role {
            Some(r) => Some(credentials::assume_role(r, &region)?),
            None => None,
        };
        let credentials = credentials::credentials(raw.credentials, assume_role, &region)?;

        let inbound_auth = match raw.inbound_auth.as_deref().unwrap_or("bearer") {
            "bearer" => InboundAuth::Bearer,
            "mtls" => InboundAuth::MutualTls,
            "none" => InboundAuth::None,
            other => {
                return Err(err(
                    "inbound_auth",
                    format!("expected \"bearer\", \"mtls\" or \"none\", got {other:?}"),
                ))
            }
        };

        let inbound_token_digests = raw
            .inbound_token_sha256
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(n, hex_digest)| {
                token_digest(hex_digest).ok_or_else(|| {
                    err(
                        "inbound_token_sha256",
                        format!(
                            "entry #{} is not a SHA-256 digest (64 hexadecimal digits)",
                            n + 1
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !inbound_token_digests.is_empty() && inbound_auth != InboundAuth::Bearer {
            return Err(err(
                "inbound_token_sha256",
                "token digests need inbound_auth \"bearer\" (they would be ignored)".to_owned(),
            ));
        }

        let upstream_prefix = format!("/datastore/{datastore_id}/r4");
        Ok(Config {
            region,
            datastore_id,
            healthlake_host,
            inbound_base_path,
            max_body_bytes,
            body_budget_bytes,
            unsupported_types,
            unsupported_type_ttl_seconds,
            capabilities_refresh_seconds,
            healthlake_cluster,
            retry_after_seconds,
            version_guard,
            credentials,
            inbound_auth,
            inbound_token_digests,
            upstream_prefix,
        })
    }
}

/// A token digest as configured: exactly 64 hexadecimal digits (either case).
fn token_digest(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

fn normalise_base_path(path: String) -> Result<String, ConfigError> {
    let trimmed = path.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    let valid = trimmed.starts_with('/')
        && trimmed
            .split('/')
            .skip(1)
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && trimmed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'));
    if valid {
        Ok(trimmed.to_owned())
    } else {
        Err(err(
            "inbound_base_path",
            format!("expected a path such as /fhir (letters, digits, '-', '_', '.'), got {path:?}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config, ConfigError> {
        Config::from_json(json.as_bytes())
    }

    const GOOD: &str = r#"{"region":"us-east-1","datastore_id":"0123456789abcdef","healthlake_host":"healthlake.us-east-1.amazonaws.com"}"#;

    #[test]
    fn accepts_minimal_config_with_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.region, "us-east-1");
        assert_eq!(c.datastore_id, "0123456789abcdef");
        assert_eq!(c.healthlake_host, "healthlake.us-east-1.amazonaws.com");
        assert_eq!(c.inbound_base_path, "");
        assert_eq!(c.upstream_prefix, "/datastore/0123456789abcdef/r4");
        assert!(c.unsupported_types.is_empty());
        assert_eq!(c.inbound_auth, InboundAuth::Bearer);
        assert_eq!(c.credentials.source, Source::Environment);
        assert_eq!(c.credentials.assume_role, None);
        // The documented values (README, Settings and Plugin configuration), written out rather
        // than the constants compared with themselves: a default changed without the docs fails.
        assert_eq!(c.max_body_bytes, 8_388_608); // RELAY_MAX_BODY_BYTES, 8 MiB
        assert_eq!(c.body_budget_bytes, 268_435_456); // RELAY_BODY_BUDGET_BYTES, 256 MiB
        assert_eq!(c.unsupported_type_ttl_seconds, 3600); // RELAY_UNSUPPORTED_TYPE_TTL_SECONDS
        assert_eq!(c.retry_after_seconds, 5); // retry_after_seconds
        assert_eq!(c.capabilities_refresh_seconds, 3600); // RELAY_CAPABILITIES_REFRESH_SECONDS
        assert_eq!(c.healthlake_cluster, "healthlake"); // healthlake_cluster
        assert_eq!(
            c.version_guard,
            Some(crate::versions::Limits {
                max_entries: 100_000,     // RELAY_VERSION_GUARD_MAX_ENTRIES
                max_age_seconds: 604_800, // RELAY_VERSION_GUARD_MAX_AGE_SECONDS, 7 days
                clock_skew_seconds: 300,  // RELAY_VERSION_GUARD_CLOCK_SKEW_SECONDS
            })
        );
    }

    #[test]
    fn documented_limits_are_the_constants() {
        assert_eq!(DEFAULT_MAX_BODY_BYTES, 8_388_608);
        assert_eq!(MAX_MAX_BODY_BYTES, 268_435_456);
        assert_eq!(DEFAULT_BODY_BUDGET_BYTES, 268_435_456);
        assert_eq!(VM_BODY_ROOM_BYTES, 939_524_096); // 896 MiB
        assert_eq!(DEFAULT_UNSUPPORTED_TYPE_TTL_SECONDS, 3600);
        assert_eq!(DEFAULT_RETRY_AFTER_SECONDS, 5);
        assert_eq!(DEFAULT_VERSION_GUARD_MAX_ENTRIES, 100_000);
        assert_eq!(DEFAULT_VERSION_GUARD_MAX_AGE_SECONDS, 604_800);
        assert_eq!(DEFAULT_VERSION_GUARD_CLOCK_SKEW_SECONDS, 300);
        assert_eq!(DEFAULT_ROLE_DURATION_SECONDS, 3600);
        // Refresh margins derived from the credentials' lifetime: a quarter, 2 to 15 minutes.
        assert_eq!(
            crate::credentials::refresh::derived_margin_ms(3_600_000),
            900_000
        );
        assert_eq!(
            crate::credentials::refresh::derived_margin_ms(900_000),
            225_000
        );
        assert_eq!(DEFAULT_FIRST_FETCH_WAIT_MS, 5000);
    }

    /// The minimal configuration plus `fields` (a JSON fragment).
    fn with(fields: &str) -> Result<Config, ConfigError> {
        parse(&format!(
            r#"{{"region":"us-east-1","datastore_id":"d","healthlake_host":"h",{fields}}}"#
        ))
    }

    #[test]
    fn numeric_settings_accept_their_documented_range_and_nothing_beyond() {
        for (field, lowest, highest) in [
            ("max_body_bytes", 1, 268_435_456),
            ("unsupported_type_ttl_seconds", 1, 604_800),
            ("retry_after_seconds", 1, 3600),
            ("capabilities_refresh_seconds", 0, 86_400),
            ("version_guard_max_entries", 0, 10_000_000),
            ("version_guard_max_age_seconds", 1, u64::MAX),
            ("version_guard_clock_skew_seconds", 0, 86_400),
        ] {
            for ok in [lowest, highest] {
                assert!(with(&format!(r#""{field}":{ok}"#)).is_ok(), "{field} {ok}");
            }
            if lowest > 0 {
                let e = with(&format!(r#""{field}":{}"#, lowest - 1)).unwrap_err();
                assert_eq!(e.field, field);
            }
            if highest < u64::MAX {
                let e = with(&format!(r#""{field}":{}"#, highest + 1)).unwrap_err();
                assert_eq!(e.field, field);
            }
        }
        let c = with(
            r#""version_guard_max_entries":10000000,"version_guard_max_age_seconds":60,"version_guard_clock_skew_seconds":86400"#,
        )
        .unwrap();
        assert_eq!(
            c.version_guard,
            Some(crate::versions::Limits {
                max_entries: 10_000_000,
                max_age_seconds: 60,
                clock_skew_seconds: 86_400,
            })
        );
        let c =
            with(r#""retry_after_seconds":3600,"unsupported_type_ttl_seconds":604800"#).unwrap();
        assert_eq!(
            (c.retry_after_seconds, c.unsupported_type_ttl_seconds),
            (3600, 604_800)
        );
    }

    #[test]
    fn the_healthlake_cluster_can_be_renamed_but_not_emptied() {
        assert_eq!(
            with(r#""healthlake_cluster":"hl""#)
                .unwrap()
                .healthlake_cluster,
            "hl"
        );
        let e = with(r#""healthlake_cluster":"""#).unwrap_err();
        assert_eq!(e.field, "healthlake_cluster");
    }

    #[test]
    fn datastore_ids_are_at_most_64_letters_digits_and_dashes() {
        let id = |id: &str| {
            parse(&format!(
                r#"{{"region":"us-east-1","datastore_id":"{id}","healthlake_host":"h"}}"#
            ))
        };
        let longest = format!("a-{}", "0".repeat(62));
        assert_eq!(
            id(&longest).unwrap().upstream_prefix,
            format!("/datastore/{longest}/r4")
        );
        assert_eq!(
            id(&format!("{longest}1")).unwrap_err().field,
            "datastore_id"
        );
        for bad in ["a_b", "a.b", "a b", "caf\u{e9}"] {
            assert_eq!(id(bad).unwrap_err().field, "datastore_id", "{bad}");
        }
        // Blank is missing, not an empty id; surrounding spaces are not part of it.
        assert_eq!(id("  ").unwrap_err().field, "datastore_id");
        assert_eq!(id(" ds-1 ").unwrap().datastore_id, "ds-1");
        let blank_region = parse(r#"{"region":" ","datastore_id":"d","healthlake_host":"h"}"#);
        assert_eq!(blank_region.unwrap_err().field, "region");
    }

    #[test]
    fn base_paths_are_plain_segments() {
        let base = |p: &str| with(&format!(r#""inbound_base_path":"{p}""#));
        assert_eq!(base("/").unwrap().inbound_base_path, "");
        assert_eq!(base(" /fhir/r4// ").unwrap().inbound_base_path, "/fhir/r4");
        assert_eq!(
            base("/a-b_c.d/E9").unwrap().inbound_base_path,
            "/a-b_c.d/E9"
        );
        for bad in [
            "/a//b",
            "/a/./b",
            "/a/../b",
            "/..",
            "/fh ir",
            "/fhir?x",
            "/caf\u{e9}",
            "fhir/",
        ] {
            assert_eq!(base(bad).unwrap_err().field, "inbound_base_path", "{bad}");
        }
    }

    #[test]
    fn body_sizes_stay_within_what_a_vm_can_hold() {
        let with = |fields: &str| {
            parse(&format!(
                r#"{{"region":"us-east-1","datastore_id":"d","healthlake_host":"h",{fields}}}"#
            ))
        };
        let c = with(r#""max_body_bytes":268435456"#).unwrap();
        assert_eq!(c.body_budget_bytes, 268_435_456);
        assert_eq!(
            with(r#""max_body_bytes":268435457"#).unwrap_err().field,
            "max_body_bytes"
        );
        let c = with(r#""max_body_bytes":1048576,"body_budget_bytes":1048576"#).unwrap();
        assert_eq!(c.body_budget_bytes, 1_048_576);
        // 896 MiB - 2 x 8 MiB: the most the default body limit allows.
        let c = with(r#""body_budget_bytes":922746880"#).unwrap();
        assert_eq!(c.body_budget_bytes, 922_746_880);
        for bad in [
            r#""max_body_bytes":2097152,"body_budget_bytes":1048576"#,
            r#""body_budget_bytes":922746881"#,
            r#""max_body_bytes":268435456,"body_budget_bytes":402653185"#,
        ] {
            assert_eq!(with(bad).unwrap_err().field, "body_budget_bytes", "{bad}");
        }
        assert_eq!(
            with(r#""version_guard_clock_skew_seconds":86401"#)
                .unwrap_err()
                .field,
            "version_guard_clock_skew_seconds"
        );
    }

    #[test]
    fn inbound_auth_is_one_of_three_words() {
        let auth = |v: &str| with(&format!(r#""inbound_auth":"{v}""#));
        assert_eq!(auth("bearer").unwrap().inbound_auth, InboundAuth::Bearer);
        assert_eq!(auth("mtls").unwrap().inbound_auth, InboundAuth::MutualTls);
        assert_eq!(auth("none").unwrap().inbound_auth, InboundAuth::None);
        for bad in ["Bearer", "tls", ""] {
            assert_eq!(auth(bad).unwrap_err().field, "inbound_auth", "{bad}");
        }
    }

    #[test]
    fn version_guard_can_be_turned_off() {
        let c = parse(
            r#"{"region":"us-east-1","datastore_id":"d","healthlake_host":"h","version_guard_max_entries":0}"#,
        )
        .unwrap();
        assert_eq!(c.version_guard, None);
    }

    #[test]
    fn unsupported_types_are_validated_sorted_and_found() {
        let c = parse(
            r#"{"region":"us-east-1","datastore_id":"d","healthlake_host":"h","unsupported_types":["TestScript","Basic","Basic"],"unsupported_type_ttl_seconds":60}"#,
        )
        .unwrap();
        assert_eq!(c.unsupported_types, ["Basic", "TestScript"]);
        assert!(c.is_preset_unsupported("Basic"));
        assert!(!c.is_preset_unsupported("Patient"));
        assert_eq!(c.unsupported_type_ttl_seconds, 60);
    }

    #[test]
    fn base_path_is_normalised() {
        let c = parse(
            r#"{"region":"eu-west-1","datastore_id":"ds","healthlake_host":"127.0.0.1:8080","inbound_base_path":"/fhir/"}"#,
        )
        .unwrap();
        assert_eq!(c.inbound_base_path, "/fhir");
        assert_eq!(c.healthlake_host, "127.0.0.1:8080");
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            ("", "configuration"),
            ("{", "configuration"),
            (r#"{"datastore_id":"d","healthlake_host":"h"}"#, "region"),
            (
                r#"{"region":"US EAST","datastore_id":"d","healthlake_host":"h"}"#,
                "region",
            ),
            (
                r#"{"region":"us-east-1","healthlake_host":"h"}"#,
                "datastore_id",
            ),
            (
                r#"{"region":"us-east-1","datastore_id":"a/b","healthlake_host":"h"}"#,
                "datastore_id",
            ),
            (
                r#"{"region":"us-east-1","datastore_id":"d"}"#,
                "healthlake_host",
            ),
            (
                r#"{"region":"us-east-1","datastore_id":"d","healthlake_host":"https://x"}"#,
                "healthlake_host",
            ),
            (
                r#"{"region":"us-east-1","datastore_id":"d","healthlake_host":"h","inbound_base_path":"fhir"}"#,
                "inbound_base_path",
            ),
            (
                r#"{"region":"us-east-1","datastore_id":"d","healthlake_host":"h","inbound_base_path":"/a/../b"}"#,
                "inbound_base_path",
            ),
            (
                r#"{"region":"us-east-1","datastore_id":"d","healthlake_host":"h","max_body_bytes":0}"#,
                "max_body_bytes",
            ),
            (
                r#"{"region":"us-east-1","datastore_id":"d","healthlake_host":"h","regoin":"x"}"#,
                "configuration",
            ),
        ];
        for (json, field) in cases {
            let e = parse(json).unwrap_err();
            assert_eq!(e.field, field, "for {json}: {e}");
            assert!(e.to_string().contains(field));
        }
    }

    #[test]
    fn unknown_field_message_names_it() {
        let e = parse(
            r#"{"region":"us-east-1","datastore_id":"d","healthlake_host":"h","regoin":"x"}"#,
        )
        .unwrap_err();
        assert!(e.problem.contains("regoin"), "{e}");
    }
}

#[cfg(test)]
mod token_digests {
    use super::*;

    fn with(digests: &str) -> Result<Config, ConfigError> {
        Config::from_json(
            format!(
                r#"{{"region":"us-east-1","datastore_id":"d","healthlake_host":"h","inbound_token_sha256":{digests}}}"#
            )
            .as_bytes(),
        )
    }

    #[test]
    fn token_digests_are_64_hex_digits() {
        let a = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let c = with(&format!(r#"["{a}","{}"]"#, a.to_uppercase())).unwrap();
        assert_eq!(c.inbound_token_digests.len(), 2);
        assert_eq!(c.inbound_token_digests[0], c.inbound_token_digests[1]);
        assert_eq!(c.inbound_token_digests[0][0], 0x9f);
        assert!(with("[]").unwrap().inbound_token_digests.is_empty());
        let mtls = Config::from_json(
            format!(
                r#"{{"region":"us-east-1","datastore_id":"d","healthlake_host":"h","inbound_auth":"mtls","inbound_token_sha256":["{a}"]}}"#
            )
            .as_bytes(),
        )
        .unwrap_err()
        .to_string();
        assert!(mtls.contains("need inbound_auth"), "{mtls}");
        for bad in [
            &a[..63],
            &format!("{a}00"),
            &a.replace('9', "g"),
            "secret-token-itself-123",
        ] {
            let e = with(&format!(r#"["{a}","{bad}"]"#))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("inbound_token_sha256") && e.contains("#2"),
                "{e}"
            );
            assert!(!e.contains(bad), "the error repeats the value: {e}");
        }
    }
}
