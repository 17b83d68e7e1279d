//! The `credentials` and `assume_role` parts of the plugin configuration: which source of the
//! AWS SDKs' default chain the relay takes its credentials from, and a role assumed on top.

use super::{err, required, ConfigError};
use crate::credentials::assume_role::AssumeRole;
use crate::credentials::imds::Imds;
use crate::credentials::web_identity::WebIdentity;
use serde::Deserialize;

/// Default AssumeRole (and AssumeRoleWithWebIdentity) session length (1 hour).
pub const DEFAULT_ROLE_DURATION_SECONDS: u32 = 3600;
/// The longest session of a role assumed with temporary credentials of another role ("role
/// chaining", AWS IAM user guide).
pub const MAX_CHAINED_DURATION_SECONDS: u32 = 3600;
/// Default time a write waits for the first credentials.
pub const DEFAULT_FIRST_FETCH_WAIT_MS: u64 = 5_000;
/// Default session name of the roles the relay assumes.
pub const DEFAULT_SESSION_NAME: &str = "healthlake-relay";
/// Default lifetime of the IMDSv2 session token asked for at each fetch.
pub const DEFAULT_IMDS_TOKEN_TTL_SECONDS: u32 = 300;
/// Where EC2 instance metadata is unless configured.
pub const DEFAULT_IMDS_HOST: &str = "169.254.169.254";

/// `assume_role`: sign with temporary credentials of an IAM role, from STS AssumeRole.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAssumeRole {
    role_arn: Option<String>,
    session_name: Option<String>,
    external_id: Option<String>,
    duration_seconds: Option<u32>,
    sts_cluster: Option<String>,
    sts_host: Option<String>,
}

/// `credentials`: the base credentials' source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredentials {
    source: Option<String>,
    refresh_margin_seconds: Option<u64>,
    first_fetch_wait_ms: Option<u64>,
    web_identity: Option<RawWebIdentity>,
    container: Option<RawContainer>,
    imds: Option<RawImds>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebIdentity {
    role_arn: Option<String>,
    session_name: Option<String>,
    duration_seconds: Option<u32>,
    sts_cluster: Option<String>,
    sts_host: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContainer {
    cluster: Option<String>,
    host: Option<String>,
    path: Option<String>,
    authorization: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImds {
    cluster: Option<String>,
    host: Option<String>,
    token_ttl_seconds: Option<u32>,
}

/// Where the container endpoint's `Authorization` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerAuthorization {
    /// None (ECS task role).
    None,
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN` in the plugin's environment.
    Environment,
    /// Envoy's `credential_injector` on the cluster, from `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`.
    Envoy,
}

/// The container endpoint, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEndpoint {
    pub cluster: String,
    pub host: String,
    pub path: String,
    pub authorization: ContainerAuthorization,
}

/// The base credentials' source, as configured (the environment's values are read by the glue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Environment,
    WebIdentity(WebIdentity),
    Container(ContainerEndpoint),
    Imds(Imds),
}

/// The validated credentials configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialsConfig {
    pub source: Source,
    /// A role assumed with the base credentials.
    pub assume_role: Option<AssumeRole>,
    /// `None`: derived from each set's lifetime.
    pub refresh_margin_seconds: Option<u64>,
    pub first_fetch_wait_ms: u64,
}

/// An IAM role ARN: `arn:<partition>:iam::<12 digits>:role/<path and name>`.
pub fn check_role_arn(field: &'static str, arn: &str) -> Result<(), ConfigError> {
    let valid = (|| {
        let rest = arn.strip_prefix("arn:")?;
        let (partition, rest) = rest.split_once(':')?;
        let rest = rest.strip_prefix("iam::")?;
        let (account, name) = rest.split_once(":role/")?;
        let ok = partition.starts_with("aws")
            && partition
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'-')
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit())
            && !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_/-".contains(&b));
        ok.then_some(())
    })();
    valid.ok_or_else(|| {
        err(
            field,
            format!(
                "expected an IAM role ARN such as arn:aws:iam::123456789012:role/name, got {arn:?}"
            ),
        )
    })
}

fn session_name(field: &'static str, raw: Option<String>) -> Result<String, ConfigError> {
    let name = raw.unwrap_or_else(|| DEFAULT_SESSION_NAME.to_owned());
    let ok = (2..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    if ok {
        Ok(name)
    } else {
        Err(err(
            field,
            "expected 2 to 64 characters from letters, digits and +=,.@_-",
        ))
    }
}

fn duration(field: &'static str, raw: Option<u32>) -> Result<u32, ConfigError> {
    let d = raw.unwrap_or(DEFAULT_ROLE_DURATION_SECONDS);
    if (900..=43_200).contains(&d) {
        Ok(d)
    } else {
        Err(err(field, "expected 900 to 43200 seconds (STS's limits)"))
    }
}

pub(super) fn cluster(
    field: &'static str,
    raw: Option<String>,
    default: &str,
) -> Result<String, ConfigError> {
    let c = raw.unwrap_or_else(|| default.to_owned());
    if c.is_empty() {
        Err(err(field, "expected an Envoy cluster name"))
    } else {
        Ok(c)
    }
}

fn host(
    field: &'static str,
    raw: Option<String>,
    default: Option<String>,
) -> Result<String, ConfigError> {
    let h = raw.or(default).unwrap_or_default();
    if h.is_empty()
        || h.contains(['/', ' ', '@', '?', '#'])
        || !h.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(err(
            field,
            "expected a host name with an optional port (no scheme or path)",
        ));
    }
    Ok(h)
}

fn sts_host(raw: Option<String>, region: &str, field: &'static str) -> Result<String, ConfigError> {
    host(field, raw, Some(format!("sts.{region}.amazonaws.com")))
}

pub(super) fn assume_role(raw: RawAssumeRole, region: &str) -> Result<AssumeRole, ConfigError> {
    let role_arn = required("assume_role.role_arn", raw.role_arn)?;
    check_role_arn("assume_role.role_arn", &role_arn)?;
    let session_name = session_name("assume_role.session_name", raw.session_name)?;
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
    Ok(AssumeRole {
        role_arn,
        session_name,
        external_id,
        duration_seconds: duration("assume_role.duration_seconds", raw.duration_seconds)?,
        cluster: cluster("assume_role.sts_cluster", raw.sts_cluster, "sts")?,
        host: sts_host(raw.sts_host, region, "assume_role.sts_host")?,
    })
}

pub(super) fn credentials(
    raw: Option<RawCredentials>,
    role: Option<AssumeRole>,
    region: &str,
) -> Result<CredentialsConfig, ConfigError> {
    let raw = raw.unwrap_or(RawCredentials {
        source: None,
        refresh_margin_seconds: None,
        first_fetch_wait_ms: None,
        web_identity: None,
        container: None,
        imds: None,
    });
    let name = raw.source.as_deref().unwrap_or("environment");
    let unused = [
        (
            "web-identity",
            raw.web_identity.is_some(),
            "credentials.web_identity",
        ),
        (
            "container",
            raw.container.is_some(),
            "credentials.container",
        ),
        ("imds", raw.imds.is_some(), "credentials.imds"),
    ];
    if let Some((_, _, field)) = unused.iter().find(|(s, set, _)| *set && *s != name) {
        return Err(err(
            field,
            format!("is set, but credentials.source is {name:?}: it would be ignored"),
        ));
    }
    let source = match name {
        "environment" => Source::Environment,
        "web-identity" => {
            let w = raw.web_identity.ok_or_else(|| {
                err("credentials.web_identity", "is required with source \"web-identity\"")
            })?;
            let role_arn = required("credentials.web_identity.role_arn", w.role_arn)?;
            check_role_arn("credentials.web_identity.role_arn", &role_arn)?;
            Source::WebIdentity(WebIdentity {
                role_arn,
                session_name: session_name("credentials.web_identity.session_name", w.session_name)?,
                duration_seconds: duration(
                    "credentials.web_identity.duration_seconds",
                    w.duration_seconds,
                )?,
                cluster: cluster(
                    "credentials.web_identity.sts_cluster",
                    w.sts_cluster,
                    "sts_web_identity",
                )?,
                host: sts_host(w.sts_host, region, "credentials.web_identity.sts_host")?,
            })
        }
        "container" => {
            let c = raw.container.ok_or_else(|| {
                err("credentials.container", "is required with source \"container\"")
            })?;
            let path = required("credentials.container.path", c.path)?;
            if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(err(
                    "credentials.container.path",
                    format!("expected a path starting with /, got {path:?}"),
                ));
            }
            let authorization = match c.authorization.as_deref().unwrap_or("none") {
                "none" => ContainerAuthorization::None,
                "environment" => ContainerAuthorization::Environment,
                "envoy" => ContainerAuthorization::Envoy,
                other => {
                    return Err(err(
                        "credentials.container.authorization",
                        format!("expected \"none\", \"environment\" or \"envoy\", got {other:?}"),
                    ))
                }
            };
            Source::Container(ContainerEndpoint {
                cluster: cluster(
                    "credentials.container.cluster",
                    c.cluster,
                    "container_credentials",
                )?,
                host: host("credentials.container.host", c.host, None)?,
                path,
                authorization,
            })
        }
        "imds" => {
            let i = raw.imds.unwrap_or(RawImds {
                cluster: None,
                host: None,
                token_ttl_seconds: None,
            });
            let ttl = i.token_ttl_seconds.unwrap_or(DEFAULT_IMDS_TOKEN_TTL_SECONDS);
            if !(1..=21_600).contains(&ttl) {
                return Err(err(
                    "credentials.imds.token_ttl_seconds",
                    "expected 1 to 21600 seconds",
                ));
            }
            Source::Imds(Imds {
                cluster: cluster("credentials.imds.cluster", i.cluster, "imds")?,
                host: host(
                    "credentials.imds.host",
                    i.host,
                    Some(DEFAULT_IMDS_HOST.to_owned()),
                )?,
                token_ttl_seconds: ttl,
            })
        }
        other => {
            return Err(err(
                "credentials.source",
                format!(
                    "expected \"environment\", \"web-identity\", \"container\" or \"imds\", got {other:?}"
                ),
            ))
        }
    };
    if let Some(r) = &role {
        if source != Source::Environment && r.duration_seconds > MAX_CHAINED_DURATION_SECONDS {
            return Err(err(
                "assume_role.duration_seconds",
                format!(
                    "expected at most {MAX_CHAINED_DURATION_SECONDS} seconds: the role is assumed \
                     with temporary credentials of another role ({name}), and STS limits such \
                     chained sessions to one hour"
                ),
            ));
        }
    }
    let refresh_margin_seconds = raw.refresh_margin_seconds;
    if let Some(m) = refresh_margin_seconds {
        if !(120..=43_200).contains(&m) {
            return Err(err(
                "credentials.refresh_margin_seconds",
                "expected 120 to 43200 seconds (leave it out to derive it from each set's lifetime)",
            ));
        }
    }
    // A margin as long as the session would have every set due for a refresh as it arrives.
    let shortest_session = [
        role.as_ref().map(|r| r.duration_seconds),
        match &source {
            Source::WebIdentity(w) => Some(w.duration_seconds),
            _ => None,
        },
    ]
    .into_iter()
    .flatten()
    .min();
    if let (Some(m), Some(d)) = (refresh_margin_seconds, shortest_session) {
        if m >= u64::from(d) {
            return Err(err(
                "credentials.refresh_margin_seconds",
                format!(
                    "expected less than the duration_seconds of the roles assumed ({d}), got {m}"
                ),
            ));
        }
    }
    let first_fetch_wait_ms = raw
        .first_fetch_wait_ms
        .unwrap_or(DEFAULT_FIRST_FETCH_WAIT_MS);
    if first_fetch_wait_ms > 60_000 {
        return Err(err(
            "credentials.first_fetch_wait_ms",
            "expected at most 60000 milliseconds",
        ));
    }
    Ok(CredentialsConfig {
        source,
        assume_role: role,
        refresh_margin_seconds,
        first_fetch_wait_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const ROLE: &str = "arn:aws:iam::123456789012:role/relay";

    fn with(fields: &str) -> Result<CredentialsConfig, ConfigError> {
        Config::from_json(
            format!(
                r#"{{"region":"eu-west-1","datastore_id":"d","healthlake_host":"h",{fields}}}"#
            )
            .as_bytes(),
        )
        .map(|c| c.credentials)
    }

    fn field(fields: &str) -> &'static str {
        with(fields).unwrap_err().field
    }

    fn role(fields: &str) -> Result<AssumeRole, ConfigError> {
        with(&format!(r#""assume_role":{{"role_arn":"{ROLE}"{fields}}}"#))
            .map(|c| c.assume_role.unwrap())
    }

    #[test]
    fn documented_defaults() {
        let c = with(r#""credentials":{}"#).unwrap();
        assert_eq!(c.source, Source::Environment);
        assert_eq!(
            (c.refresh_margin_seconds, c.first_fetch_wait_ms),
            (None, 5000)
        );
        let r = role("").unwrap();
        assert_eq!(r.host, "sts.eu-west-1.amazonaws.com");
        assert_eq!(r.cluster, "sts");
        assert_eq!(r.duration_seconds, 3600);
        assert_eq!(r.session_name, "healthlake-relay");
        assert_eq!(r.external_id, None);
        let Source::Imds(i) = with(r#""credentials":{"source":"imds"}"#).unwrap().source else {
            panic!()
        };
        assert_eq!(
            (i.cluster.as_str(), i.host.as_str(), i.token_ttl_seconds),
            ("imds", "169.254.169.254", 300)
        );
        let Source::WebIdentity(w) = with(&format!(
            r#""credentials":{{"source":"web-identity","web_identity":{{"role_arn":"{ROLE}"}}}}"#
        ))
        .unwrap()
        .source
        else {
            panic!()
        };
        assert_eq!(w.cluster, "sts_web_identity");
        assert_eq!(w.host, "sts.eu-west-1.amazonaws.com");
        assert_eq!(
            (w.session_name.as_str(), w.duration_seconds),
            ("healthlake-relay", 3600)
        );
        let Source::Container(c) = with(
            r#""credentials":{"source":"container","container":{"host":"169.254.170.2","path":"/v2/credentials/abc"}}"#,
        )
        .unwrap()
        .source
        else {
            panic!()
        };
        assert_eq!(
            c,
            ContainerEndpoint {
                cluster: "container_credentials".into(),
                host: "169.254.170.2".into(),
                path: "/v2/credentials/abc".into(),
                authorization: ContainerAuthorization::None,
            }
        );
    }

    #[test]
    fn every_value_is_kept() {
        let r = role(
            r#","session_name":"relay+=,.@_-9","external_id":"ext:id/1+=,.@_-","duration_seconds":43200,"sts_cluster":"my_sts","sts_host":"127.0.0.1:4566""#,
        )
        .unwrap();
        assert_eq!(
            r,
            AssumeRole {
                role_arn: ROLE.into(),
                session_name: "relay+=,.@_-9".into(),
                external_id: Some("ext:id/1+=,.@_-".into()),
                duration_seconds: 43_200,
                cluster: "my_sts".into(),
                host: "127.0.0.1:4566".into(),
            }
        );
        let c = with(
            r#""credentials":{"source":"container","refresh_margin_seconds":120,"first_fetch_wait_ms":60000,
                "container":{"cluster":"pod","host":"127.0.0.1:80","path":"/v1/credentials","authorization":"envoy"}}"#,
        )
        .unwrap();
        assert_eq!(
            (c.refresh_margin_seconds, c.first_fetch_wait_ms),
            (Some(120), 60_000)
        );
        let Source::Container(e) = c.source else {
            panic!()
        };
        assert_eq!(
            (e.cluster.as_str(), e.authorization),
            ("pod", ContainerAuthorization::Envoy)
        );
        let Source::Imds(i) = with(
            r#""credentials":{"source":"imds","imds":{"cluster":"md","host":"[fd00:ec2::254]","token_ttl_seconds":21600}}"#,
        )
        .unwrap()
        .source
        else {
            panic!()
        };
        assert_eq!(
            (i.cluster.as_str(), i.host.as_str(), i.token_ttl_seconds),
            ("md", "[fd00:ec2::254]", 21600)
        );
        assert_eq!(role(r#","external_id":"""#).unwrap().external_id, None);
        assert!(role(&format!(r#","session_name":"{}""#, "n".repeat(64))).is_ok());
        assert!(role(&format!(r#","external_id":"{}""#, "e".repeat(1224))).is_ok());
        let gov = "arn:aws-us-gov:iam::123456789012:role/path/r";
        let r = with(&format!(r#""assume_role":{{"role_arn":"{gov}"}}"#)).unwrap();
        assert_eq!(r.assume_role.unwrap().role_arn, gov);
    }

    #[test]
    fn bad_values_name_their_field() {
        let long_name = "n".repeat(65);
        for (fields, bad) in [
            (r#""assume_role":{}"#.to_owned(), "assume_role.role_arn"),
            (r#""assume_role":{"role_arn":"relay"}"#.to_owned(), "assume_role.role_arn"),
            (format!(r#""assume_role":{{"role_arn":"{ROLE}","rolearn":"x"}}"#), "configuration"),
            (format!(r#""assume_role":{{"role_arn":"{ROLE}","session_name":"a"}}"#), "assume_role.session_name"),
            (format!(r#""assume_role":{{"role_arn":"{ROLE}","session_name":"{long_name}"}}"#), "assume_role.session_name"),
            (format!(r#""assume_role":{{"role_arn":"{ROLE}","external_id":"a b"}}"#), "assume_role.external_id"),
            (format!(r#""assume_role":{{"role_arn":"{ROLE}","external_id":"{}"}}"#, "e".repeat(1225)), "assume_role.external_id"),
            (format!(r#""assume_role":{{"role_arn":"{ROLE}","duration_seconds":899}}"#), "assume_role.duration_seconds"),
            (format!(r#""assume_role":{{"role_arn":"{ROLE}","duration_seconds":43201}}"#), "assume_role.duration_seconds"),
            (format!(r#""assume_role":{{"role_arn":"{ROLE}","sts_cluster":""}}"#), "assume_role.sts_cluster"),
            (format!(r#""assume_role":{{"role_arn":"{ROLE}","sts_host":""}}"#), "assume_role.sts_host"),
            (format!(r#""assume_role":{{"role_arn":"{ROLE}","sts_host":"https://x"}}"#), "assume_role.sts_host"),
            (format!(r#""assume_role":{{"role_arn":"{ROLE}","sts_host":"sts host"}}"#), "assume_role.sts_host"),
            // The margin moved to "credentials": in "assume_role" it is an unknown field.
            (format!(r#""assume_role":{{"role_arn":"{ROLE}","refresh_margin_seconds":900}}"#), "configuration"),
            (r#""credentials":{"source":"sso"}"#.to_owned(), "credentials.source"),
            (r#""credentials":{"refresh_margin_seconds":119}"#.to_owned(), "credentials.refresh_margin_seconds"),
            (r#""credentials":{"refresh_margin_seconds":43201}"#.to_owned(), "credentials.refresh_margin_seconds"),
            (r#""credentials":{"first_fetch_wait_ms":60001}"#.to_owned(), "credentials.first_fetch_wait_ms"),
            (r#""credentials":{"imds":{}}"#.to_owned(), "credentials.imds"),
            (r#""credentials":{"source":"imds","container":{}}"#.to_owned(), "credentials.container"),
            (r#""credentials":{"source":"imds","imds":{"token_ttl_seconds":0}}"#.to_owned(), "credentials.imds.token_ttl_seconds"),
            (r#""credentials":{"source":"imds","imds":{"token_ttl_seconds":21601}}"#.to_owned(), "credentials.imds.token_ttl_seconds"),
            (r#""credentials":{"source":"imds","imds":{"host":"http://169.254.169.254"}}"#.to_owned(), "credentials.imds.host"),
            (r#""credentials":{"source":"imds","imds":{"cluster":""}}"#.to_owned(), "credentials.imds.cluster"),
            (r#""credentials":{"source":"web-identity"}"#.to_owned(), "credentials.web_identity"),
            (r#""credentials":{"source":"web-identity","web_identity":{}}"#.to_owned(), "credentials.web_identity.role_arn"),
            (r#""credentials":{"source":"web-identity","web_identity":{"role_arn":"arn:aws:iam::1:role/r"}}"#.to_owned(), "credentials.web_identity.role_arn"),
            (format!(r#""credentials":{{"source":"web-identity","web_identity":{{"role_arn":"{ROLE}","duration_seconds":100}}}}"#), "credentials.web_identity.duration_seconds"),
            (r#""credentials":{"source":"container"}"#.to_owned(), "credentials.container"),
            (r#""credentials":{"source":"container","container":{"host":"h"}}"#.to_owned(), "credentials.container.path"),
            (r#""credentials":{"source":"container","container":{"host":"h","path":"v1"}}"#.to_owned(), "credentials.container.path"),
            (r#""credentials":{"source":"container","container":{"path":"/v1"}}"#.to_owned(), "credentials.container.host"),
            (r#""credentials":{"source":"container","container":{"host":"h","path":"/v1","authorization":"file"}}"#.to_owned(), "credentials.container.authorization"),
            // Role chaining: at most an hour on top of another role's credentials.
            (format!(r#""credentials":{{"source":"imds"}},"assume_role":{{"role_arn":"{ROLE}","duration_seconds":3601}}"#), "assume_role.duration_seconds"),
        ] {
            assert_eq!(field(&fields), bad, "{fields}");
        }
        assert!(with(&format!(
            r#""credentials":{{"source":"imds"}},"assume_role":{{"role_arn":"{ROLE}","duration_seconds":3600}}"#
        ))
        .is_ok());
        assert!(with(&format!(
            r#""assume_role":{{"role_arn":"{ROLE}","duration_seconds":43200}}"#
        ))
        .is_ok());
        // The margin must be shorter than the sessions the relay asks for.
        for (json, ok) in [
            (
                format!(
                    r#""credentials":{{"refresh_margin_seconds":900}},"assume_role":{{"role_arn":"{ROLE}","duration_seconds":900}}"#
                ),
                false,
            ),
            (
                format!(
                    r#""credentials":{{"refresh_margin_seconds":899}},"assume_role":{{"role_arn":"{ROLE}","duration_seconds":900}}"#
                ),
                true,
            ),
            (
                format!(
                    r#""credentials":{{"source":"web-identity","refresh_margin_seconds":1000,"web_identity":{{"role_arn":"{ROLE}","duration_seconds":1000}}}}"#
                ),
                false,
            ),
            (
                format!(
                    r#""credentials":{{"source":"web-identity","refresh_margin_seconds":999,"web_identity":{{"role_arn":"{ROLE}","duration_seconds":1000}}}}"#
                ),
                true,
            ),
            (
                r#""credentials":{"source":"imds","refresh_margin_seconds":43200}"#.to_owned(),
                true,
            ),
        ] {
            match with(&json) {
                Ok(_) => assert!(ok, "{json}"),
                Err(e) => {
                    assert!(!ok, "{json}");
                    assert_eq!(e.field, "credentials.refresh_margin_seconds");
                }
            }
        }
    }

    #[test]
    fn role_arns_are_checked_as_the_settings_check_them() {
        for good in [
            ROLE,
            "arn:aws-cn:iam::123456789012:role/a/b/c+=,.@_-",
            "arn:aws-us-gov:iam::123456789012:role/r",
        ] {
            assert!(check_role_arn("f", good).is_ok(), "{good}");
        }
        for bad in [
            "arn:aws:iam::123456789012:user/r",
            "arn:aws:iam::12345678901:role/r",
            "arn:aws:iam::1234567890123:role/r",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::123456789012:role/a b",
            "arn:gcp:iam::123456789012:role/r",
            "arn:aws:sts::123456789012:role/r",
            "iam::123456789012:role/r",
        ] {
            let e = check_role_arn("f", bad).unwrap_err();
            assert!(e.problem.contains("expected an IAM role ARN"), "{bad}");
        }
    }
}
