//! The plugin's configuration: the JSON in `envoy.yaml`'s `plugin_config.configuration`, parsed and
//! validated once when the plugin starts. A bad value yields one error naming the field and what is
//! expected; the glue logs it and refuses to start the plugin.

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
    retry_after_seconds: Option<u64>,
    #[serde(default)]
    version_guard_max_entries: Option<usize>,
    #[serde(default)]
    version_guard_max_age_seconds: Option<u64>,
    #[serde(default)]
    version_guard_clock_skew_seconds: Option<u64>,
    #[serde(default)]
    assume_role: Option<RawAssumeRole>,
    #[serde(default)]
    inbound_auth: Option<String>,
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

/// `assume_role`: sign with temporary credentials of an IAM role, from STS AssumeRole.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAssumeRole {
    role_arn: Option<String>,
    session_name: Option<String>,
    external_id: Option<String>,
    duration_seconds: Option<u32>,
    sts_cluster: Option<String>,
    sts_host: Option<String>,
    refresh_margin_seconds: Option<u64>,
    first_fetch_wait_ms: Option<u64>,
}

/// Default AssumeRole session length (1 hour).
pub const DEFAULT_ROLE_DURATION_SECONDS: u32 = 3600;
/// Default: refresh from 15 minutes before expiry (as botocore does).
pub const DEFAULT_REFRESH_MARGIN_SECONDS: u64 = 900;
/// Default time a write waits for the first credentials.
pub const DEFAULT_FIRST_FETCH_WAIT_MS: u64 = 5_000;

fn assume_role(raw: RawAssumeRole, region: &str) -> Result<crate::sts::AssumeRole, ConfigError> {
    let role_arn = required("assume_role.role_arn", raw.role_arn)?;
    if !(role_arn.starts_with("arn:aws") && role_arn.contains(":role/")) {
        return Err(err(
            "assume_role.role_arn",
            format!("expected an IAM role ARN such as arn:aws:iam::123456789012:role/name, got {role_arn:?}"),
        ));
    }
    let session_name = raw
        .session_name
        .unwrap_or_else(|| "healthlake-relay".to_owned());
    let name_ok = (2..=64).contains(&session_name.len())
        && session_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    if !name_ok {
        return Err(err(
            "assume_role.session_name",
            "expected 2 to 64 characters from letters, digits and +=,.@_-",
        ));
    }
    let external_id = raw.external_id.filter(|e| !e.is_empty());
    if let Some(e) = &external_id {
        let ok = (2..=1224).contains(&e.len())
            && e.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@:/_-".contains(&b));
        if !ok {
            return Err(err(
                "assume_role.external_id",
                "expected 2 to 1224 characters from letters, digits and +=,.@:/_-",
            ));
        }
    }
    let duration_seconds = raw
        .duration_seconds
        .unwrap_or(DEFAULT_ROLE_DURATION_SECONDS);
    if !(900..=43_200).contains(&duration_seconds) {
        return Err(err(
            "assume_role.duration_seconds",
            "expected 900 to 43200 seconds (STS's limits)",
        ));
    }
    let refresh_margin_seconds = raw
        .refresh_margin_seconds
        .unwrap_or(DEFAULT_REFRESH_MARGIN_SECONDS);
    if refresh_margin_seconds < 120 || refresh_margin_seconds >= u64::from(duration_seconds) {
        return Err(err(
            "assume_role.refresh_margin_seconds",
            "expected at least 120 seconds and less than duration_seconds",
        ));
    }
    let cluster = raw.sts_cluster.unwrap_or_else(|| "sts".to_owned());
    if cluster.is_empty() {
        return Err(err(
            "assume_role.sts_cluster",
            "expected an Envoy cluster name",
        ));
    }
    let host = raw
        .sts_host
        .unwrap_or_else(|| format!("sts.{region}.amazonaws.com"));
    if host.is_empty() || host.contains(['/', ' ', '@', '?', '#']) {
        return Err(err(
            "assume_role.sts_host",
            "expected a host name with an optional port (no scheme or path)",
        ));
    }
    let first_fetch_wait_ms = raw
        .first_fetch_wait_ms
        .unwrap_or(DEFAULT_FIRST_FETCH_WAIT_MS);
    if first_fetch_wait_ms > 60_000 {
        return Err(err(
            "assume_role.first_fetch_wait_ms",
            "expected at most 60000 milliseconds",
        ));
    }
    Ok(crate::sts::AssumeRole {
        role_arn,
        session_name,
        external_id,
        duration_seconds,
        cluster,
        host,
        refresh_margin_seconds,
        first_fetch_wait_ms,
    })
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
    /// `Retry-After` on `throttled` answers when HealthLake sent none.
    pub retry_after_seconds: u64,
    /// Bounds of the version guard's memory; `None` when the guard is off.
    pub version_guard: Option<crate::versions::Limits>,
    /// Temporary credentials from STS AssumeRole; `None` signs with the environment's.
    pub assume_role: Option<crate::sts::AssumeRole>,
    /// How callers are authenticated.
    pub inbound_auth: InboundAuth,
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
            Some(r) => Some(assume_role(r, &region)?),
            None => None,
        };

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
            retry_after_seconds,
            version_guard,
            assume_role,
            inbound_auth,
            upstream_prefix,
        })
    }
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
        assert_eq!(c.inbound_base_path, "");
        assert_eq!(c.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(c.upstream_prefix, "/datastore/0123456789abcdef/r4");
        assert!(c.unsupported_types.is_empty());
        assert_eq!(c.inbound_auth, InboundAuth::Bearer);
        assert_eq!(
            c.unsupported_type_ttl_seconds,
            DEFAULT_UNSUPPORTED_TYPE_TTL_SECONDS
        );
        assert_eq!(c.retry_after_seconds, DEFAULT_RETRY_AFTER_SECONDS);
        assert_eq!(
            c.version_guard.map(|l| l.max_entries),
            Some(DEFAULT_VERSION_GUARD_MAX_ENTRIES)
        );
        // The documented values, not the constants compared with themselves.
        assert_eq!(c.body_budget_bytes, 268_435_456);
        assert_eq!(c.version_guard.map(|l| l.clock_skew_seconds), Some(300));
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
    fn assume_role_defaults_and_checks() {
        let c = parse(
            r#"{"region":"eu-west-1","datastore_id":"d","healthlake_host":"h","assume_role":{"role_arn":"arn:aws:iam::123456789012:role/relay"}}"#,
        )
        .unwrap();
        let r = c.assume_role.unwrap();
        assert_eq!(r.host, "sts.eu-west-1.amazonaws.com");
        assert_eq!(r.cluster, "sts");
        assert_eq!(r.duration_seconds, DEFAULT_ROLE_DURATION_SECONDS);
        assert_eq!(r.refresh_margin_seconds, DEFAULT_REFRESH_MARGIN_SECONDS);
        assert_eq!(r.session_name, "healthlake-relay");
        assert_eq!(r.external_id, None);
        for (role, field) in [
            (r#"{}"#, "assume_role.role_arn"),
            (r#"{"role_arn":"relay"}"#, "assume_role.role_arn"),
            (
                r#"{"role_arn":"arn:aws:iam::1:role/r","session_name":"a b"}"#,
                "assume_role.session_name",
            ),
            (
                r#"{"role_arn":"arn:aws:iam::1:role/r","duration_seconds":60}"#,
                "assume_role.duration_seconds",
            ),
            (
                r#"{"role_arn":"arn:aws:iam::1:role/r","duration_seconds":900,"refresh_margin_seconds":900}"#,
                "assume_role.refresh_margin_seconds",
            ),
            (
                r#"{"role_arn":"arn:aws:iam::1:role/r","external_id":"a b"}"#,
                "assume_role.external_id",
            ),
            (
                r#"{"role_arn":"arn:aws:iam::1:role/r","sts_host":"https://x"}"#,
                "assume_role.sts_host",
            ),
            (
                r#"{"role_arn":"arn:aws:iam::1:role/r","rolearn":"x"}"#,
                "configuration",
            ),
        ] {
            let json = format!(
                r#"{{"region":"us-east-1","datastore_id":"d","healthlake_host":"h","assume_role":{role}}}"#
            );
            assert_eq!(parse(&json).unwrap_err().field, field, "{role}");
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
