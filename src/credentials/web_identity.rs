//! Web identity (EKS IRSA): STS `AssumeRoleWithWebIdentity` with the service account token that
//! the kubelet writes, and rotates, in `AWS_WEB_IDENTITY_TOKEN_FILE`.
//!
//! A Wasm filter cannot read files, so the token is not in the call the relay builds: the STS
//! cluster for web identity carries two upstream HTTP filters that Envoy runs on every call to
//! it: `credential_injector` reads the token file (file-based SDS, re-read when the kubelet
//! rotates it) into the [`TOKEN_HEADER`] header, and a Lua filter moves it, form-encoded, to the
//! end of the form body as `WebIdentityToken` (see `envoy.yaml`). The call is unsigned, as the
//! SDKs make it.

use super::assume_role::{form, FORM};
use super::call::Call;

/// The header Envoy's `credential_injector` fills with the token file's content; the Lua filter
/// after it removes it again.
pub const TOKEN_HEADER: &str = "x-relay-web-identity-token";

/// Which role to assume with the web identity token (validated by `config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebIdentity {
    /// `AWS_ROLE_ARN`.
    pub role_arn: String,
    /// `AWS_ROLE_SESSION_NAME`.
    pub session_name: String,
    pub duration_seconds: u32,
    /// The Envoy cluster that reaches STS with the token-adding filters.
    pub cluster: String,
    /// The `:authority` of STS.
    pub host: String,
}

/// The form body, without the token (Envoy appends `&WebIdentityToken=...`).
pub fn form_body(w: &WebIdentity) -> String {
    let duration = w.duration_seconds.to_string();
    form(&[
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("RoleArn", &w.role_arn),
        ("RoleSessionName", &w.session_name),
        ("DurationSeconds", &duration),
    ])
}

/// The call (unsigned: the token is the proof).
pub fn call(w: &WebIdentity) -> Call {
    let mut call = Call::new(&w.cluster, "POST", &w.host, "/").header("content-type", FORM);
    call.body = form_body(w).into_bytes();
    call
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web_identity() -> WebIdentity {
        WebIdentity {
            role_arn: "arn:aws:iam::123456789012:role/relay-irsa".into(),
            session_name: "healthlake-relay".into(),
            duration_seconds: 3600,
            cluster: "sts_web_identity".into(),
            host: "sts.eu-west-1.amazonaws.com".into(),
        }
    }

    #[test]
    fn the_call_is_an_unsigned_form_post_without_the_token() {
        let c = call(&web_identity());
        assert_eq!(c.cluster, "sts_web_identity");
        assert_eq!(c.get(":method"), Some("POST"));
        assert_eq!(c.get(":path"), Some("/"));
        assert_eq!(c.get(":authority"), Some("sts.eu-west-1.amazonaws.com"));
        assert_eq!(c.get("content-type"), Some(FORM));
        assert_eq!(c.get("authorization"), None);
        assert_eq!(c.get(TOKEN_HEADER), None);
        assert_eq!(
            String::from_utf8(c.body).unwrap(),
            "Action=AssumeRoleWithWebIdentity&Version=2011-06-15\
             &RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Frelay-irsa\
             &RoleSessionName=healthlake-relay&DurationSeconds=3600"
        );
    }
}
