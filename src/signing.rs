//! SigV4 signing of the request the relay sends to HealthLake, over the exact bytes sent.
//!
//! The body is hashed chunk by chunk as it arrives ([`PayloadHasher`]); the signature then covers
//! a small fixed set of headers (`host`, `content-type` when there is a body, `x-amz-date`,
//! `x-amz-content-sha256`, `x-amz-security-token` when present), so headers Envoy adds later
//! (`x-request-id`, `x-forwarded-*`, ...) cannot break it.
//!
//! Every write is signed by [`sign_request_cached`]: it builds the canonical request for that
//! fixed header set itself and signs with the day's signing key, derived by the `aws-sigv4`
//! crate once per credentials, date, region and service and kept as an HMAC already keyed with
//! it ([`KeyCache`]). [`sign_request`], the `aws-sigv4` crate's whole signer, signs the relay's
//! rare calls of its own (the CapabilityStatement), and a unit test proves both produce the same
//! headers byte for byte; the emulator verifies them with an independent implementation.

use crate::credentials::Credentials;
use aws_credential_types::Credentials as AwsCredentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
};
use aws_sigv4::sign::v4;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::fmt;
use std::time::SystemTime;

/// The SigV4 service name of HealthLake's data plane.
pub const HEALTHLAKE_SERVICE: &str = "healthlake";

/// Hex SHA-256 of the empty body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Incremental SHA-256 of a request body.
#[derive(Default, Clone)]
pub struct PayloadHasher {
    hasher: Sha256,
    len: u64,
}

impl PayloadHasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
        self.len = self.len.saturating_add(chunk.len() as u64);
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The lowercase hex digest.
    pub fn finish_hex(self) -> String {
        hex_digest(&self.hasher.finalize().into())
    }
}

/// What is signed: the request exactly as it will be sent to HealthLake.
#[derive(Debug, Clone, Copy)]
pub struct SigningInput<'a> {
    pub method: &'a str,
    /// The `:authority`/`host` sent.
    pub host: &'a str,
    /// The path sent, already in its on-the-wire (percent-encoded) form.
    pub path: &'a str,
    /// The `content-type` sent, if any.
    pub content_type: Option<&'a str>,
    /// Hex SHA-256 of the body sent.
    pub payload_sha256: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    pub time: SystemTime,
}

/// Why a request could not be signed. It is then not forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningError(pub String);

impl fmt::Display for SigningError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigV4 signing failed: {}", self.0)
    }
}

impl std::error::Error for SigningError {}

/// Signs `input` with `credentials`; returns the headers to set on the request
/// (`authorization`, `x-amz-date`, `x-amz-content-sha256`, and `x-amz-security-token` for
/// temporary credentials), lowercase names.
pub fn sign_request(
    input: &SigningInput<'_>,
    credentials: &Credentials,
) -> Result<Vec<(String, String)>, SigningError> {
    let identity = AwsCredentials::new(
        credentials.access_key_id.clone(),
        credentials.secret_access_key.clone(),
        credentials.session_token.clone(),
        credentials.expires_at,
        "healthlake-relay",
    )
    .into();

    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;

    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(input.region)
        .name(input.service)
        .time(input.time)
        .settings(settings)
        .build()
        .map_err(|e| SigningError(e.to_string()))?
        .into();

    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(2);
    headers.push(("host", input.host));
    if let Some(ct) = input.content_type {
        headers.push(("content-type", ct));
    }
    let signable = SignableRequest::new(
        input.method,
        input.path,
        headers.into_iter(),
        SignableBody::Precomputed(input.payload_sha256.to_owned()),
    )
    .map_err(|e| SigningError(e.to_string()))?;

    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| SigningError(e.to_string()))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
        .collect())
}

/// The derived SigV4 signing key of the last credentials/day/region/service, so that the four
/// HMACs that derive it run once a day per credentials instead of once per request; kept as an
/// HMAC already keyed with it, so that each signature also skips hashing the key's padding.
#[derive(Default)]
pub struct KeyCache {
    entry: Option<CachedKey>,
}

struct CachedKey {
    access_key_id: String,
    secret_access_key: String,
    date: String,
    region: String,
    service: String,
    keyed: Hmac<Sha256>,
}

/// Signs like [`sign_request`] (the same headers, byte for byte: a unit test compares them),
/// building the canonical request for the relay's fixed header set directly and reusing the
/// cached signing key. `aws-sigv4` still derives the key; the signature is the HMAC-SHA256 of the
/// string to sign under it.
pub fn sign_request_cached(
    input: &SigningInput<'_>,
    credentials: &Credentials,
    cache: &mut KeyCache,
) -> Result<Vec<(String, String)>, SigningError> {
    let amz_date = crate::calendar::amz_date(input.time);
    let date = amz_date.get(..8).unwrap_or_default();
    let token = credentials.session_token.as_deref();
    let headers = signed_headers(input, &amz_date, token);
    let canonical = canonical_request(input, &headers);
    // Built with push_str, not format!: core::fmt costs several times more per request in Wasm.
    let mut scope =
        String::with_capacity(date.len() + input.region.len() + input.service.len() + 15);
    for part in [date, "/", input.region, "/", input.service, "/aws4_request"] {
        scope.push_str(part);
    }
    let mut canonical_hash = [0u8; 64];
    hex::encode_to_slice(Sha256::digest(canonical.as_bytes()), &mut canonical_hash)
        .map_err(|e| SigningError(format!("canonical request hash: {e}")))?;
    let fresh = cache.entry.as_ref().is_none_or(|k| {
        k.date != date
            || k.region != input.region
            || k.service != input.service
            || k.access_key_id != credentials.access_key_id
            || k.secret_access_key != credentials.secret_access_key
    });
    if fresh {
        let key = v4::generate_signing_key(
            &credentials.secret_access_key,
            input.time,
            input.region,
            input.service,
        );
        let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_ref())
            .map_err(|e| SigningError(format!("signing key: {e}")))?;
        cache.entry = Some(CachedKey {
            access_key_id: credentials.access_key_id.clone(),
            secret_access_key: credentials.secret_access_key.clone(),
            date: date.to_owned(),
            region: input.region.to_owned(),
            service: input.service.to_owned(),
            keyed,
        });
    }
    let mut mac = cache
        .entry
        .as_ref()
        .map(|k| k.keyed.clone())
        .ok_or_else(|| SigningError("no signing key".to_owned()))?;
    // The string to sign, fed to the HMAC part by part.
    for part in [
        b"AWS4-HMAC-SHA256\n".as_slice(),
        amz_date.as_bytes(),
        b"\n",
        scope.as_bytes(),
        b"\n",
        &canonical_hash,
    ] {
        mac.update(part);
    }
    let signature = hex_digest(&mac.finalize().into_bytes().into());
    let signed_headers = header_names(&headers);
    let mut headers = Vec::with_capacity(4);
    headers.push(("x-amz-date".to_owned(), amz_date.clone()));
    headers.push((
        "x-amz-content-sha256".to_owned(),
        input.payload_sha256.to_owned(),
    ));
    if let Some(t) = token {
        headers.push(("x-amz-security-token".to_owned(), t.to_owned()));
    }
    let parts = [
        "AWS4-HMAC-SHA256 Credential=",
        &credentials.access_key_id,
        "/",
        &scope,
        ", SignedHeaders=",
        &signed_headers,
        ", Signature=",
        &signature,
    ];
    let mut authorization = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        authorization.push_str(part);
    }
    headers.push(("authorization".to_owned(), authorization));
    Ok(headers)
}

/// What was signed, kept for the troubleshooting log of an `auth-failed` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub amz_date: String,
    pub payload_sha256: String,
    pub with_session_token: bool,
}

impl Signed {
    /// Picks what the log needs out of the headers [`sign_request`] returned.
    pub fn from_headers(headers: &[(String, String)], payload_sha256: &str) -> Signed {
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        Signed {
            amz_date: get("x-amz-date").unwrap_or_default().to_owned(),
            payload_sha256: payload_sha256.to_owned(),
            with_session_token: get("x-amz-security-token").is_some(),
        }
    }
}

/// The SigV4 canonical request the relay signed, rebuilt for the troubleshooting log with the
/// session token's value replaced by `<redacted>`: compare it with the canonical request
/// HealthLake's error (or the emulator's) says it expected. It holds no secret.
pub fn canonical_request_for_log(input: &SigningInput<'_>, signed: &Signed) -> String {
    let token = signed.with_session_token.then_some("<redacted>");
    canonical_request(input, &signed_headers(input, &signed.amz_date, token))
}

/// A 32-byte digest in lowercase hex. (`hex::encode` collects chars one by one, several times
/// slower; this runs twice for every write.)
fn hex_digest(digest: &[u8; 32]) -> String {
    let mut out = [0u8; 64];
    match hex::encode_to_slice(digest, &mut out) {
        Ok(()) => std::str::from_utf8(&out)
            .map(str::to_owned)
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The relay's fixed set of signed headers, (name, value) sorted by name: `content-type` when
/// there is a body, `host`, `x-amz-content-sha256`, `x-amz-date`, and `x-amz-security-token` for
/// temporary credentials.
fn signed_headers<'a>(
    input: &SigningInput<'a>,
    amz_date: &'a str,
    token: Option<&'a str>,
) -> Vec<(&'static str, &'a str)> {
    let mut headers = Vec::with_capacity(5);
    if let Some(ct) = input.content_type {
        headers.push(("content-type", ct));
    }
    headers.push(("host", input.host));
    headers.push(("x-amz-content-sha256", input.payload_sha256));
    headers.push(("x-amz-date", amz_date));
    if let Some(t) = token {
        headers.push(("x-amz-security-token", t));
    }
    headers
}

/// The `SignedHeaders` list: the names, `;`-separated.
fn header_names(headers: &[(&str, &str)]) -> String {
    let mut names = String::with_capacity(96);
    for (i, (name, _)) in headers.iter().enumerate() {
        if i > 0 {
            names.push(';');
        }
        names.push_str(name);
    }
    names
}

/// The canonical request over `headers` (AWS SigV4 specification: method, URI-encoded path,
/// empty query, sorted lowercase headers, signed-header list, payload hash).
fn canonical_request(input: &SigningInput<'_>, headers: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(input.method);
    out.push('\n');
    for (i, segment) in input.path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        crate::percent::encode_into(&mut out, segment);
    }
    out.push_str("\n\n");
    for (name, value) in headers {
        out.push_str(name);
        out.push(':');
        out.push_str(value.trim());
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&header_names(headers));
    out.push('\n');
    out.push_str(input.payload_sha256);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn creds(token: Option<&str>) -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: token.map(str::to_owned),
            expires_at: None,
        }
    }

    fn input<'a>(body_hash: &'a str, path: &'a str) -> SigningInput<'a> {
        SigningInput {
            method: "PUT",
            host: "healthlake.us-east-1.amazonaws.com",
            path,
            content_type: Some("application/fhir+json"),
            payload_sha256: body_hash,
            region: "us-east-1",
            service: HEALTHLAKE_SERVICE,
            // 2015-08-30T12:36:00Z, the AWS test suite's moment.
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160),
        }
    }

    fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
        h.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn hasher_matches_one_shot_digest_across_chunks() {
        let body = br#"{"resourceType":"Patient","id":"example"}"#;
        let mut h = PayloadHasher::new();
        for chunk in body.chunks(7) {
            h.update(chunk);
        }
        assert_eq!(h.len(), body.len() as u64);
        assert_eq!(h.finish_hex(), hex::encode(Sha256::digest(body)));
        assert_eq!(PayloadHasher::new().finish_hex(), EMPTY_SHA256);
    }

    #[test]
    fn hasher_counts_what_it_hashed() {
        let mut h = PayloadHasher::new();
        assert!(h.is_empty());
        h.update(b"");
        assert!(h.is_empty());
        h.update(b"{}");
        assert!(!h.is_empty());
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn signing_errors_say_so() {
        assert_eq!(
            SigningError("no region".into()).to_string(),
            "SigV4 signing failed: no region"
        );
    }

    #[test]
    fn cached_key_follows_region_and_service() {
        // Same credentials and day, another region or service: another signing key.
        let hash = EMPTY_SHA256;
        let mut cache = KeyCache::default();
        let c = creds(None);
        for (region, service) in [
            ("us-east-1", "healthlake"),
            ("eu-west-1", "healthlake"),
            ("eu-west-1", "sts"),
            ("us-east-1", "sts"),
            ("us-east-1", "healthlake"),
        ] {
            let mut i = input(hash, "/datastore/ds/r4/Patient/a");
            i.region = region;
            i.service = service;
            let mut got = sign_request_cached(&i, &c, &mut cache).unwrap();
            let mut want = sign_request(&i, &c).unwrap();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{region} {service}");
        }
        // Same day, region, service and key id, but the secret rotated: another signing key.
        let i = input(hash, "/datastore/ds/r4/Patient/a");
        let mut rotated = creds(None);
        rotated.secret_access_key = "rotated-secret".into();
        for c in [&creds(None), &rotated, &creds(None)] {
            let mut got = sign_request_cached(&i, c, &mut cache).unwrap();
            let mut want = sign_request(&i, c).unwrap();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{}", c.secret_access_key);
        }
    }

    #[test]
    fn signs_fixed_header_set_with_body_hash() {
        let hash = hex::encode(Sha256::digest(b"{}"));
        let h = sign_request(
            &input(&hash, "/datastore/ds/r4/Patient/example"),
            &creds(None),
        )
        .unwrap();
        assert_eq!(header(&h, "x-amz-date"), Some("20150830T123600Z"));
        assert_eq!(header(&h, "x-amz-content-sha256"), Some(hash.as_str()));
        assert_eq!(header(&h, "x-amz-security-token"), None);
        let auth = header(&h, "authorization").unwrap();
        assert!(auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/healthlake/aws4_request, "
        ), "{auth}");
        assert!(
            auth.contains("SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date,"),
            "{auth}"
        );
    }

    #[test]
    fn session_token_is_sent_and_signed() {
        let h = sign_request(
            &input(EMPTY_SHA256, "/datastore/ds/r4/Patient/example"),
            &creds(Some("TOKEN")),
        )
        .unwrap();
        assert_eq!(header(&h, "x-amz-security-token"), Some("TOKEN"));
        assert!(header(&h, "authorization")
            .unwrap()
            .contains("x-amz-date;x-amz-security-token,"));
    }

    #[test]
    fn logged_canonical_request_is_what_was_signed_without_the_token() {
        let hash = hex::encode(Sha256::digest(b"{}"));
        for token in [None, Some("TOKEN-VALUE")] {
            let i = input(&hash, "/datastore/ds/r4/Patient/a.b-1");
            let c = creds(token);
            let h = sign_request(&i, &c).unwrap();
            let signed = Signed::from_headers(&h, &hash);
            assert_eq!(signed.with_session_token, token.is_some());

            // The canonical request with the real token reproduces aws-sigv4's signature.
            let creq = canonical_request(&i, &signed_headers(&i, &signed.amz_date, token));
            let string_to_sign = format!(
                "AWS4-HMAC-SHA256\n{}\n20150830/us-east-1/healthlake/aws4_request\n{}",
                signed.amz_date,
                hex::encode(Sha256::digest(creq.as_bytes()))
            );
            let key =
                v4::generate_signing_key(&c.secret_access_key, i.time, "us-east-1", "healthlake");
            let signature = v4::calculate_signature(key, string_to_sign.as_bytes());
            let auth = header(&h, "authorization").unwrap();
            assert!(
                auth.ends_with(&format!("Signature={signature}")),
                "{creq}\n{auth}"
            );

            let logged = canonical_request_for_log(&i, &signed);
            assert!(!logged.contains("TOKEN-VALUE"));
            assert_eq!(
                logged.contains("x-amz-security-token:<redacted>"),
                token.is_some()
            );
            assert!(logged.starts_with("PUT\n/datastore/ds/r4/Patient/a.b-1\n\ncontent-type:"));
        }
    }

    #[test]
    fn cached_signing_gives_exactly_aws_sigv4_headers() {
        let hash = hex::encode(Sha256::digest(b"{\"resourceType\":\"Patient\"}"));
        let mut cache = KeyCache::default();
        let day = 86_400;
        for (secs, token, method, content_type, path) in [
            (
                1_440_938_160,
                None,
                "PUT",
                Some("application/fhir+json"),
                "/datastore/ds/r4/Patient/a",
            ),
            (
                1_440_938_161,
                Some("TOKEN/+="),
                "PUT",
                Some("application/fhir+json"),
                "/datastore/ds/r4/Patient/b.c-1",
            ),
            (
                1_440_938_162,
                Some("TOKEN/+="),
                "DELETE",
                None,
                "/datastore/ds/r4/Observation/x",
            ),
            (
                1_440_938_160 + day,
                None,
                "PUT",
                Some("application/fhir+json"),
                "/datastore/ds/r4/Patient/a",
            ),
            (
                1_440_938_160 + day,
                None,
                "POST",
                Some("application/x-www-form-urlencoded; charset=utf-8"),
                "/",
            ),
        ] {
            let mut i = input(&hash, path);
            i.time = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            i.method = method;
            i.content_type = content_type;
            let c = creds(token);
            let expected = sign_request(&i, &c).unwrap();
            let mut got = sign_request_cached(&i, &c, &mut cache).unwrap();
            let mut want = expected.clone();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{method} {path} {token:?}");
        }
        // Other credentials on the same day get their own key.
        let mut other = creds(None);
        other.secret_access_key = "another-secret".into();
        let i = input(&hash, "/datastore/ds/r4/Patient/a");
        let mut got = sign_request_cached(&i, &other, &mut cache).unwrap();
        let mut want = sign_request(&i, &other).unwrap();
        got.sort();
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn signature_depends_on_body_path_and_time() {
        let sig = |hash: &str, path: &str, secs: u64| {
            let mut i = input(hash, path);
            i.time = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            let h = sign_request(&i, &creds(None)).unwrap();
            header(&h, "authorization").unwrap().to_owned()
        };
        let a = sig(EMPTY_SHA256, "/datastore/ds/r4/Patient/a", 1_440_938_160);
        assert_eq!(
            a,
            sig(EMPTY_SHA256, "/datastore/ds/r4/Patient/a", 1_440_938_160)
        );
        assert_ne!(
            a,
            sig(&"0".repeat(64), "/datastore/ds/r4/Patient/a", 1_440_938_160)
        );
        assert_ne!(
            a,
            sig(EMPTY_SHA256, "/datastore/ds/r4/Patient/b", 1_440_938_160)
        );
        assert_ne!(
            a,
            sig(EMPTY_SHA256, "/datastore/ds/r4/Patient/a", 1_440_938_161)
        );
    }
}
