//! Shared test helpers: signing requests with the `aws-sigv4` crate (an implementation
//! independent of the emulator's verifier) and feeding them to the verifier or the handlers.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, SessionTokenMode, SignableBody, SignableRequest, SigningSettings,
};
use aws_sigv4::sign::v4;
use healthlake_emulator::sigv4::{self, Credential, Policy, Request};

pub mod app;
pub mod process;

pub const AKID: &str = "AKIDEMULATORTEST";
pub const SECRET: &str = "emulator/test+secret/KEYEXAMPLEKEYEXAMPLE";
pub const TEMP_AKID: &str = "ASIAEMULATORTEST";
pub const TEMP_SECRET: &str = "temporary/secret+KEYEXAMPLEKEYEXAMPLE";
pub const TOKEN: &str = "IQoJb3JpZ2luX2VjEXAMPLE//////////session+token/value==";
pub const REGION: &str = "us-east-1";
pub const SERVICE: &str = "healthlake";
pub const DATASTORE: &str = "0123456789abcdef0123456789abcdef";
pub const HOST: &str = "healthlake.us-east-1.amazonaws.com";

/// The credential sets the verifier accepts in these tests.
pub fn accepted() -> Vec<Credential> {
    vec![
        Credential::new(AKID, SECRET, None),
        Credential::new(TEMP_AKID, TEMP_SECRET, Some(TOKEN.to_string())),
    ]
}

/// How to sign.
#[derive(Clone, Debug)]
pub struct SignOpts {
    pub access_key_id: String,
    pub secret: String,
    pub token: Option<String>,
    pub region: String,
    pub service: String,
    pub time: SystemTime,
    pub content_sha256: bool,
    pub sign_token: bool,
}

impl SignOpts {
    pub fn long_term() -> Self {
        SignOpts {
            access_key_id: AKID.into(),
            secret: SECRET.into(),
            token: None,
            region: REGION.into(),
            service: SERVICE.into(),
            time: SystemTime::now(),
            content_sha256: true,
            sign_token: true,
        }
    }

    pub fn temporary() -> Self {
        SignOpts {
            access_key_id: TEMP_AKID.into(),
            secret: TEMP_SECRET.into(),
            token: Some(TOKEN.into()),
            ..Self::long_term()
        }
    }
}

/// Builds and signs a request with aws-sigv4. `uri` is origin-form (path and query, already
/// percent-encoded as it goes on the wire).
pub fn signed_request(
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    opts: &SignOpts,
) -> http::Request<Vec<u8>> {
    let mut builder = http::Request::builder().method(method).uri(uri);
    for (n, v) in headers {
        builder = builder.header(*n, *v);
    }
    let mut req = builder.body(body.to_vec()).unwrap();

    let identity = Credentials::new(
        &opts.access_key_id,
        &opts.secret,
        opts.token.clone(),
        None,
        "emulator-tests",
    )
    .into();
    let mut settings = SigningSettings::default();
    if opts.content_sha256 {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    if !opts.sign_token {
        settings.session_token_mode = SessionTokenMode::Exclude;
    }
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&opts.region)
        .name(&opts.service)
        .time(opts.time)
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let owned: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap().to_string()))
        .collect();
    let signable = SignableRequest::new(
        method,
        uri.to_string(),
        owned.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _signature) = sign(signable, &params).unwrap().into_parts();
    instructions.apply_to_request_http1x(&mut req);
    req
}

/// A HealthLake-like signed PUT of a JSON resource.
pub fn signed_put(type_: &str, id: &str, body: &[u8], opts: &SignOpts) -> http::Request<Vec<u8>> {
    signed_request(
        "PUT",
        &format!("/datastore/{DATASTORE}/r4/{type_}/{id}"),
        &[("host", HOST), ("content-type", "application/fhir+json")],
        body,
        opts,
    )
}

pub fn policy(credentials: &[Credential], now: SystemTime) -> Policy<'_> {
    Policy {
        region: REGION,
        service: SERVICE,
        credentials,
        now,
        max_skew: Duration::from_secs(300),
        normalize_path: true,
    }
}

/// Runs the emulator's verifier on an http::Request as it would arrive.
pub fn verify(req: &http::Request<Vec<u8>>, policy: &Policy<'_>) -> sigv4::Verification {
    let headers: Vec<(&str, &[u8])> = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    sigv4::verify(
        &Request {
            method: req.method().as_str(),
            path: req.uri().path(),
            query: req.uri().query().unwrap_or_default(),
            headers: &headers,
            body: req.body(),
        },
        policy,
    )
}

pub fn patient(id: &str) -> Vec<u8> {
    format!(
        "{{\n  \"resourceType\": \"Patient\",\n  \"id\": \"{id}\",\n  \"active\": true,\n  \"name\": [ {{ \"family\": \"Chalmers\", \"given\": [\"Peter\", \"James\"] }} ]\n}}\n"
    )
    .into_bytes()
}

/// A fresh temporary directory per call (tests run in parallel in one process; the pid keeps test
/// binaries apart).
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("hle-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
