//! Container credentials: the ECS task role (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, from
//! `http://169.254.170.2`) and EKS Pod Identity (`AWS_CONTAINER_CREDENTIALS_FULL_URI`, the agent
//! at `http://169.254.170.23/v1/credentials`, with the token of
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` as `Authorization`). One `GET`; the answer is JSON
//! (see [`super::json_answer`]).
//!
//! A token file is read by Envoy, not by the relay (a Wasm filter cannot read files): the
//! cluster's `credential_injector` upstream filter puts its current content in `Authorization`
//! on every call. A token given as `AWS_CONTAINER_AUTHORIZATION_TOKEN` is set by the relay.

use super::call::Call;
use std::fmt;

/// Where the `Authorization` header of the call comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum Authorization {
    /// None is sent (the ECS task role's relative URI).
    None,
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN`, read from the plugin's environment.
    Token(String),
    /// Envoy adds it from `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`.
    InjectedByEnvoy,
}

impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Authorization::None => "None",
            Authorization::Token(_) => "Token(<redacted>)",
            Authorization::InjectedByEnvoy => "InjectedByEnvoy",
        })
    }
}

/// Where the container credentials endpoint is (validated by `config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub cluster: String,
    /// The `:authority` of the endpoint, e.g. `169.254.170.23`.
    pub host: String,
    /// Path and query, e.g. `/v1/credentials`.
    pub path: String,
    pub authorization: Authorization,
}

/// The call.
pub fn call(c: &Container) -> Call {
    let call = Call::new(&c.cluster, "GET", &c.host, &c.path).header("accept", "application/json");
    match &c.authorization {
        Authorization::Token(token) => call.header("authorization", token),
        Authorization::None | Authorization::InjectedByEnvoy => call,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(authorization: Authorization) -> Container {
        Container {
            cluster: "container_credentials".into(),
            host: "169.254.170.23".into(),
            path: "/v1/credentials".into(),
            authorization,
        }
    }

    #[test]
    fn the_call_carries_the_token_only_when_the_relay_has_it() {
        let c = call(&container(Authorization::Token("pod-token".into())));
        assert_eq!(c.cluster, "container_credentials");
        assert_eq!(c.get(":method"), Some("GET"));
        assert_eq!(c.get(":path"), Some("/v1/credentials"));
        assert_eq!(c.get(":authority"), Some("169.254.170.23"));
        assert_eq!(c.get("authorization"), Some("pod-token"));
        assert!(c.body.is_empty());
        for other in [Authorization::None, Authorization::InjectedByEnvoy] {
            assert_eq!(call(&container(other)).get("authorization"), None);
        }
    }

    #[test]
    fn debug_hides_the_token() {
        let shown = format!("{:?}", container(Authorization::Token("pod-token".into())));
        assert!(!shown.contains("pod-token"), "{shown}");
        assert!(shown.contains("Token(<redacted>)"), "{shown}");
    }
}
