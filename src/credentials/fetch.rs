//! One fetch of credentials: the calls to the base source, in order, then AssumeRole on top when
//! a role is configured. Pure: the provider makes the calls and hands the answers back.

use super::assume_role::{self, AssumeRole};
use super::call::{Call, FetchError};
use super::container::{self, Authorization, Container};
use super::imds::{self, Imds};
use super::web_identity::{self, WebIdentity};
use super::{json_answer, refresh, sts_answer, Credentials, Unavailable};
use crate::config::{ContainerAuthorization, CredentialsConfig, Source};
use std::time::SystemTime;

/// Where the base credentials come from (the AWS SDKs' default chain, one source chosen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, as they are.
    Environment(Result<Credentials, Unavailable>),
    WebIdentity(WebIdentity),
    Container(Container),
    Imds(Imds),
}

impl Base {
    /// The source's name in logs, stats and the access log.
    pub fn name(&self) -> &'static str {
        match self {
            Base::Environment(_) => ENVIRONMENT,
            Base::WebIdentity(_) => WEB_IDENTITY,
            Base::Container(_) => CONTAINER,
            Base::Imds(_) => IMDS,
        }
    }
}

pub const ENVIRONMENT: &str = "environment";
pub const WEB_IDENTITY: &str = "web-identity";
pub const CONTAINER: &str = "container";
pub const IMDS: &str = "imds";
pub const ASSUME_ROLE: &str = "assume-role";

/// Every source a fetch may call, for per-source stats.
pub const SOURCES: [&str; 5] = [ENVIRONMENT, WEB_IDENTITY, CONTAINER, IMDS, ASSUME_ROLE];

/// The credentials the relay signs with: a base source, and optionally a role assumed with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub base: Base,
    pub role: Option<AssumeRole>,
    /// The region STS calls are signed for.
    pub region: String,
}

impl Plan {
    /// Whether credentials must be fetched (and refreshed): anything but the environment's keys
    /// used as they are.
    pub fn fetches(&self) -> bool {
        self.role.is_some() || !matches!(self.base, Base::Environment(_))
    }

    /// What signs, for logs and the access log: `imds`, or `imds+assume-role`.
    pub fn label(&self) -> String {
        match &self.role {
            Some(_) => format!("{}+{ASSUME_ROLE}", self.base.name()),
            None => self.base.name().to_owned(),
        }
    }
}

impl Plan {
    /// The plan of a validated configuration; `lookup` reads the plugin's environment (the
    /// environment's keys, `AWS_CONTAINER_AUTHORIZATION_TOKEN`). `Err` when a variable the
    /// configuration relies on is missing.
    pub fn from_config(
        config: &CredentialsConfig,
        region: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Plan, String> {
        let base = match &config.source {
            Source::Environment => Base::Environment(Credentials::from_env(&lookup)),
            Source::WebIdentity(w) => Base::WebIdentity(w.clone()),
            Source::Imds(_)
                if lookup(IMDS_DISABLED_VARIABLE)
                    .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) =>
            {
                return Err(format!(
                    "credentials.source is \"imds\" but {IMDS_DISABLED_VARIABLE} is true in the \
                     plugin's environment: instance metadata is not to be used here"
                ))
            }
            Source::Imds(i) => Base::Imds(i.clone()),
            Source::Container(c) => Base::Container(Container {
                cluster: c.cluster.clone(),
                host: c.host.clone(),
                path: c.path.clone(),
                authorization: match c.authorization {
                    ContainerAuthorization::None => Authorization::None,
                    ContainerAuthorization::Envoy => Authorization::InjectedByEnvoy,
                    ContainerAuthorization::Environment => Authorization::Token(
                        lookup(CONTAINER_TOKEN_VARIABLE)
                            .map(|t| t.trim().to_owned())
                            .filter(|t| {
                                !t.is_empty()
                                    && t.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
                            })
                            .ok_or_else(|| {
                                format!(
                                    "credentials.container.authorization is \"environment\" but \
                                     {CONTAINER_TOKEN_VARIABLE} is not set in the plugin's \
                                     environment (vm_config.environment_variables), or is not \
                                     a header value"
                                )
                            })?,
                    ),
                },
            }),
        };
        Ok(Plan {
            base,
            role: config.assume_role.clone(),
            region: region.to_owned(),
        })
    }
}

/// The AWS SDKs' switch that turns EC2 instance metadata off, honoured by the relay too.
pub const IMDS_DISABLED_VARIABLE: &str = "AWS_EC2_METADATA_DISABLED";

/// The variable holding the container endpoint's token when it is not in a file.
pub const CONTAINER_TOKEN_VARIABLE: &str = "AWS_CONTAINER_AUTHORIZATION_TOKEN";

#[derive(Clone)]
enum Stage {
    WebIdentity,
    Container,
    ImdsToken,
    ImdsRole { token: String },
    ImdsCredentials,
    AssumeRole,
}

/// A fetch in progress: which call's answer is awaited. Holds the IMDS session token between
/// calls, so it is never printed.
pub struct Fetch {
    stage: Stage,
}

/// What a fetch needs next.
#[derive(Debug)]
pub enum Next {
    Call(Call),
    Done(Credentials),
}

impl Fetch {
    /// The first call of a fetch. `Err` when it cannot start (no base credentials for
    /// AssumeRole, or nothing to fetch).
    pub fn start(plan: &Plan, now: SystemTime) -> Result<(Fetch, Call), FetchError> {
        match &plan.base {
            Base::Environment(base) => {
                let base = base
                    .as_ref()
                    .map_err(|e| FetchError::new(ENVIRONMENT, e.to_string()))?;
                let Some(role) = &plan.role else {
                    return Err(FetchError::new(
                        ENVIRONMENT,
                        "the environment's keys are used as they are: nothing to fetch",
                    ));
                };
                let call = assume(role, &plan.region, base, now)?;
                Ok((
                    Fetch {
                        stage: Stage::AssumeRole,
                    },
                    call,
                ))
            }
            Base::WebIdentity(w) => Ok((
                Fetch {
                    stage: Stage::WebIdentity,
                },
                web_identity::call(w),
            )),
            Base::Container(c) => Ok((
                Fetch {
                    stage: Stage::Container,
                },
                container::call(c),
            )),
            Base::Imds(i) => Ok((
                Fetch {
                    stage: Stage::ImdsToken,
                },
                imds::token_call(i),
            )),
        }
    }

    /// The source whose answer is awaited.
    pub fn source(&self) -> &'static str {
        match self.stage {
            Stage::WebIdentity => WEB_IDENTITY,
            Stage::Container => CONTAINER,
            Stage::ImdsToken | Stage::ImdsRole { .. } | Stage::ImdsCredentials => IMDS,
            Stage::AssumeRole => ASSUME_ROLE,
        }
    }

    /// Reads the answer to the last call: the next call, or the credentials.
    pub fn answer(
        &mut self,
        plan: &Plan,
        status: u16,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Next, FetchError> {
        let source = self.source();
        let fail = |message: String| FetchError::new(source, message);
        let base = match (&self.stage, &plan.base) {
            (Stage::AssumeRole, _) => {
                return sts_answer::parse(status, body)
                    .map(Next::Done)
                    .map_err(|e| fail(e.to_string()));
            }
            (Stage::WebIdentity, _) => {
                sts_answer::parse(status, body).map_err(|e| fail(e.to_string()))?
            }
            (Stage::Container, _) => json_answer::parse(status, body).map_err(fail)?,
            (Stage::ImdsToken, Base::Imds(i)) => {
                let token = imds::read_token(status, body).map_err(fail)?;
                let call = imds::role_call(i, &token);
                self.stage = Stage::ImdsRole { token };
                return Ok(Next::Call(call));
            }
            (Stage::ImdsRole { token }, Base::Imds(i)) => {
                let role = imds::read_role(status, body).map_err(fail)?;
                let call = imds::credentials_call(i, token, &role);
                self.stage = Stage::ImdsCredentials;
                return Ok(Next::Call(call));
            }
            (Stage::ImdsCredentials, _) => {
                json_answer::parse(status, body).map_err(|e| fail(format!("credentials: {e}")))?
            }
            _ => return Err(fail("an answer to a call of another source".to_owned())),
        };
        match &plan.role {
            None => Ok(Next::Done(base)),
            Some(role) => {
                refresh::check_issued(base.expires_at.map(refresh::unix_ms), refresh::unix_ms(now))
                    .map_err(fail)?;
                let call = assume(role, &plan.region, &base, now)?;
                self.stage = Stage::AssumeRole;
                Ok(Next::Call(call))
            }
        }
    }
}

fn assume(
    role: &AssumeRole,
    region: &str,
    base: &Credentials,
    now: SystemTime,
) -> Result<Call, FetchError> {
    assume_role::call(role, region, base, now)
        .map_err(|e| FetchError::new(ASSUME_ROLE, format!("cannot sign the call: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::container::Authorization;
    use std::time::Duration;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000)
    }

    fn iso(t: SystemTime) -> String {
        crate::calendar::rfc3339(refresh::unix_ms(t) / 1000)
    }

    fn json_creds(key: &str, expires: SystemTime) -> Vec<u8> {
        format!(
            r#"{{"AccessKeyId":"{key}","SecretAccessKey":"s","Token":"t","Expiration":"{}"}}"#,
            iso(expires)
        )
        .into_bytes()
    }

    fn sts_creds(action: &str, key: &str, expires: SystemTime) -> Vec<u8> {
        format!(
            "<{action}Response><{action}Result><Credentials><AccessKeyId>{key}</AccessKeyId>\
             <SecretAccessKey>s</SecretAccessKey><SessionToken>t</SessionToken>\
             <Expiration>{}</Expiration></Credentials></{action}Result></{action}Response>",
            iso(expires)
        )
        .into_bytes()
    }

    fn role() -> AssumeRole {
        AssumeRole {
            role_arn: "arn:aws:iam::123456789012:role/on-top".into(),
            session_name: "healthlake-relay".into(),
            external_id: None,
            duration_seconds: 3600,
            cluster: "sts".into(),
            host: "sts.us-east-1.amazonaws.com".into(),
        }
    }

    fn plan(base: Base, role: Option<AssumeRole>) -> Plan {
        Plan {
            base,
            role,
            region: "us-east-1".into(),
        }
    }

    fn imds() -> Base {
        Base::Imds(Imds {
            cluster: "imds".into(),
            host: "127.0.0.1:1".into(),
            token_ttl_seconds: 300,
        })
    }

    fn path(c: &Call) -> &str {
        c.get(":path").unwrap()
    }

    #[test]
    fn imds_takes_three_calls_then_assume_role_a_fourth() {
        let hour = now() + Duration::from_secs(3600);
        for with_role in [false, true] {
            let p = plan(imds(), with_role.then(role));
            assert!(p.fetches());
            let (mut f, call) = Fetch::start(&p, now()).unwrap();
            assert_eq!((f.source(), path(&call)), (IMDS, imds::TOKEN_PATH));
            let Next::Call(call) = f.answer(&p, 200, b"session-tok", now()).unwrap() else {
                panic!()
            };
            assert_eq!(path(&call), imds::ROLE_PATH);
            assert_eq!(call.get(imds::TOKEN_HEADER), Some("session-tok"));
            let Next::Call(call) = f.answer(&p, 200, b"instance-role\n", now()).unwrap() else {
                panic!()
            };
            assert_eq!(path(&call), format!("{}instance-role", imds::ROLE_PATH));
            assert_eq!(call.get(imds::TOKEN_HEADER), Some("session-tok"));
            let next = f
                .answer(&p, 200, &json_creds("ASIAINSTANCE", hour), now())
                .unwrap();
            if !with_role {
                let Next::Done(c) = next else { panic!() };
                assert_eq!(c.access_key_id, "ASIAINSTANCE");
                assert_eq!(p.label(), "imds");
                continue;
            }
            let Next::Call(call) = next else { panic!() };
            assert_eq!(f.source(), ASSUME_ROLE);
            assert_eq!(call.cluster, "sts");
            let auth = call.get("authorization").unwrap();
            assert!(auth.contains("Credential=ASIAINSTANCE/"), "{auth}");
            assert_eq!(call.get("x-amz-security-token"), Some("t"));
            let Next::Done(c) = f
                .answer(&p, 200, &sts_creds("AssumeRole", "ASIAROLE", hour), now())
                .unwrap()
            else {
                panic!()
            };
            assert_eq!(c.access_key_id, "ASIAROLE");
            assert_eq!(p.label(), "imds+assume-role");
        }
    }

    #[test]
    fn web_identity_and_container_take_one_call() {
        let hour = now() + Duration::from_secs(3600);
        let w = plan(
            Base::WebIdentity(WebIdentity {
                role_arn: "arn:aws:iam::123456789012:role/irsa".into(),
                session_name: "s".into(),
                duration_seconds: 3600,
                cluster: "sts_web_identity".into(),
                host: "sts.us-east-1.amazonaws.com".into(),
            }),
            None,
        );
        let (mut f, call) = Fetch::start(&w, now()).unwrap();
        assert_eq!(
            (f.source(), call.cluster.as_str()),
            (WEB_IDENTITY, "sts_web_identity")
        );
        let body = sts_creds("AssumeRoleWithWebIdentity", "ASIAIRSA", hour);
        let Next::Done(c) = f.answer(&w, 200, &body, now()).unwrap() else {
            panic!()
        };
        assert_eq!(c.access_key_id, "ASIAIRSA");
        let c = plan(
            Base::Container(Container {
                cluster: "container_credentials".into(),
                host: "127.0.0.1:2".into(),
                path: "/v1/credentials".into(),
                authorization: Authorization::InjectedByEnvoy,
            }),
            None,
        );
        let (mut f, call) = Fetch::start(&c, now()).unwrap();
        assert_eq!((f.source(), path(&call)), (CONTAINER, "/v1/credentials"));
        let Next::Done(got) = f
            .answer(&c, 200, &json_creds("ASIAPOD", hour), now())
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(got.access_key_id, "ASIAPOD");
    }

    #[test]
    fn failures_name_the_source_that_failed() {
        let p = plan(imds(), Some(role()));
        let (mut f, _) = Fetch::start(&p, now()).unwrap();
        let e = f.answer(&p, 401, b"", now()).unwrap_err();
        assert_eq!(e.source, IMDS);
        assert!(e.message.contains("answered 401"), "{e}");
        // Base credentials about to expire are not used to assume the role.
        let (mut f, _) = Fetch::start(&p, now()).unwrap();
        f.answer(&p, 200, b"tok", now()).unwrap();
        f.answer(&p, 200, b"role", now()).unwrap();
        let soon = now() + Duration::from_secs(30);
        let e = f
            .answer(&p, 200, &json_creds("ASIAOLD", soon), now())
            .unwrap_err();
        assert_eq!(e.source, IMDS);
        assert!(e.message.contains("too soon to use"), "{e}");
        // The role's refusal is the role's.
        let (mut f, _) = Fetch::start(&p, now()).unwrap();
        f.answer(&p, 200, b"tok", now()).unwrap();
        f.answer(&p, 200, b"role", now()).unwrap();
        let hour = now() + Duration::from_secs(3600);
        f.answer(&p, 200, &json_creds("ASIAI", hour), now())
            .unwrap();
        let denied = b"<ErrorResponse><Error><Code>AccessDenied</Code><Message>no</Message></Error></ErrorResponse>";
        let e = f.answer(&p, 403, denied, now()).unwrap_err();
        assert_eq!(e.source, ASSUME_ROLE);
        assert!(e.message.contains("403 AccessDenied"), "{e}");
    }

    #[test]
    fn plans_come_from_the_configuration_and_the_environment() {
        let config = |json: &str| {
            crate::config::Config::from_json(
                format!(
                    r#"{{"region":"us-east-1","datastore_id":"d","healthlake_host":"h",{json}}}"#
                )
                .as_bytes(),
            )
            .unwrap()
            .credentials
        };
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let keys = &[
            ("AWS_ACCESS_KEY_ID", "AKIDX"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ];
        let p = Plan::from_config(&config(r#""credentials":{}"#), "us-east-1", env(keys)).unwrap();
        assert!(matches!(&p.base, Base::Environment(Ok(c)) if c.access_key_id == "AKIDX"));
        assert!(!p.fetches());
        let p = Plan::from_config(&config(r#""credentials":{}"#), "us-east-1", env(&[])).unwrap();
        assert!(matches!(p.base, Base::Environment(Err(_))));
        let pod = r#""credentials":{"source":"container","container":{"host":"169.254.170.23","path":"/v1/credentials","authorization":"environment"}}"#;
        let p = Plan::from_config(
            &config(pod),
            "us-east-1",
            env(&[("AWS_CONTAINER_AUTHORIZATION_TOKEN", " pod-token\n")]),
        )
        .unwrap();
        let Base::Container(c) = &p.base else {
            panic!()
        };
        assert_eq!(c.authorization, Authorization::Token("pod-token".into()));
        let e = Plan::from_config(&config(pod), "us-east-1", env(keys)).unwrap_err();
        assert!(
            e.contains("AWS_CONTAINER_AUTHORIZATION_TOKEN is not set"),
            "{e}"
        );
        let e = Plan::from_config(
            &config(pod),
            "us-east-1",
            env(&[("AWS_CONTAINER_AUTHORIZATION_TOKEN", "a\u{1}b")]),
        )
        .unwrap_err();
        assert!(e.contains("not a header value"), "{e}");
        let p = Plan::from_config(
            &config(r#""credentials":{"source":"imds"},"assume_role":{"role_arn":"arn:aws:iam::123456789012:role/r"}"#),
            "eu-west-1",
            env(keys),
        )
        .unwrap();
        assert_eq!(p.label(), "imds+assume-role");
        assert_eq!(p.region, "eu-west-1");
        let imds = config(r#""credentials":{"source":"imds"}"#);
        for (value, ok) in [
            ("true", false),
            (" TRUE ", false),
            ("false", true),
            ("", true),
        ] {
            let e = Plan::from_config(&imds, "us-east-1", |k: &str| {
                (k == "AWS_EC2_METADATA_DISABLED").then(|| value.to_owned())
            });
            assert_eq!(e.is_ok(), ok, "{value:?}");
        }
    }

    #[test]
    fn the_environment_is_fetched_only_to_assume_a_role() {
        let keys = Credentials {
            access_key_id: "AKIDENV".into(),
            secret_access_key: "s".into(),
            session_token: None,
            expires_at: None,
        };
        let alone = plan(Base::Environment(Ok(keys.clone())), None);
        assert!(!alone.fetches());
        assert_eq!(alone.label(), "environment");
        assert!(Fetch::start(&alone, now()).is_err());
        let with_role = plan(Base::Environment(Ok(keys)), Some(role()));
        assert!(with_role.fetches());
        let (f, call) = Fetch::start(&with_role, now()).unwrap();
        assert_eq!(f.source(), ASSUME_ROLE);
        assert!(call.get("authorization").unwrap().contains("AKIDENV/"));
        let missing = plan(
            Base::Environment(Err(Unavailable::Missing("AWS_ACCESS_KEY_ID"))),
            Some(role()),
        );
        let e = Fetch::start(&missing, now()).err().unwrap();
        assert_eq!(e.source, ENVIRONMENT);
        assert!(e.message.contains("AWS_ACCESS_KEY_ID"), "{e}");
    }
}
