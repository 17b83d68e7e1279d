//! An AWS Signature Version 4 (`AWS4-HMAC-SHA256`, signature in the `Authorization` header)
//! verifier, written from the public SigV4 specification.
//!
//! It deliberately shares no code with the `aws-sigv4` crate the relay signs with, so the two
//! implementations check each other. Only `hmac`, `sha2`, `hex` and `subtle` are used.
//!
//! [`verify`] rebuilds the canonical request and the string to sign from the request exactly as
//! received, applies the policy a HealthLake-like service enforces (credential scope, required
//! signed headers, session token, clock skew, `x-amz-content-sha256`), compares signatures in
//! constant time, and finally rejects an expired temporary credential. Whatever it managed to
//! compute before failing is returned alongside the error, so the emulator can show a client the
//! canonical request it should have signed.

use std::fmt;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::timefmt;

/// The only algorithm this verifier accepts.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The terminator of every SigV4 credential scope.
pub const SCOPE_TERMINATOR: &str = "aws4_request";
/// AWS's message for an expired session token (`ExpiredTokenException`).
pub const EXPIRED_TOKEN_MESSAGE: &str = "The security token included in the request is expired";

type HmacSha256 = Hmac<Sha256>;

/// One accepted credential set. `Debug` never shows the secret or the session token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// When the set stops being accepted (a temporary credential issued by STS): a request
    /// verified at or after this instant fails with [`Reason::ExpiredToken`]. `None` never expires.
    pub expires_at: Option<SystemTime>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "expires_at",
                &self.expires_at.map(timefmt::format_rfc3339_millis),
            )
            .finish()
    }
}

impl Credential {
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        Credential {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token,
            expires_at: None,
        }
    }

    /// The same set, accepted only until `expires_at`.
    pub fn expiring_at(self, expires_at: SystemTime) -> Self {
        Credential {
            expires_at: Some(expires_at),
            ..self
        }
    }

    /// True when the set has an expiry and `now` is at or past it.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|e| now >= e)
    }

    /// Parses `AKID:SECRET` or `AKID:SECRET:SESSIONTOKEN`. Error messages never contain the
    /// secret or the token.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        let mut parts = spec.splitn(3, ':');
        let akid = parts.next().unwrap_or_default();
        let secret = parts.next();
        let token = parts.next();
        if akid.is_empty() {
            return Err(
                "credential has an empty access key id (expected AKID:SECRET[:TOKEN])".into(),
            );
        }
        if akid.contains('/') || akid.chars().any(char::is_whitespace) {
            return Err(format!(
                "access key id {akid:?} must not contain '/' or whitespace"
            ));
        }
        let Some(secret) = secret.filter(|s| !s.is_empty()) else {
            return Err(format!(
                "credential for access key id {akid} has no secret (expected AKID:SECRET[:TOKEN])"
            ));
        };
        let token = match token {
            None => None,
            Some("") => {
                return Err(format!(
                    "credential for access key id {akid} has an empty session token"
                ))
            }
            Some(t) => Some(t.to_string()),
        };
        Ok(Credential::new(akid, secret, token))
    }
}

/// A request as received on the wire.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The HTTP method, e.g. `PUT`.
    pub method: &'a str,
    /// The path exactly as received (still percent-encoded), without the query.
    pub path: &'a str,
    /// The raw query string without the leading `?` (empty if none).
    pub query: &'a str,
    /// Every header as received, in order; names in any case, values as raw bytes.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The body bytes actually received.
    pub body: &'a [u8],
}

/// What the verifier accepts.
#[derive(Clone, Copy, Debug)]
pub struct Policy<'a> {
    pub region: &'a str,
    pub service: &'a str,
    pub credentials: &'a [Credential],
    /// The verifier's notion of "now" (passed in so tests are deterministic).
    pub now: SystemTime,
    /// How far `x-amz-date` may be from `now`, either way.
    pub max_skew: Duration,
    /// Normalise the URI path (remove `.`/`..` segments, collapse `//`) before encoding it, as
    /// every AWS service but S3 does.
    pub normalize_path: bool,
}

/// Why a request failed verification. Each reason maps onto the AWS error type a real service
/// would answer with ([`Reason::error_type`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No `Authorization` header.
    MissingAuthorization,
    /// The `Authorization` header could not be parsed.
    MalformedAuthorization,
    /// The `Authorization` header names an algorithm other than `AWS4-HMAC-SHA256`.
    UnsupportedAlgorithm,
    /// No `x-amz-date` header.
    MissingDate,
    /// `x-amz-date` is not `YYYYMMDDTHHMMSSZ`.
    MalformedDate,
    /// `SignedHeaders` lists a header the request does not carry.
    SignedHeaderAbsent,
    /// `host`, `x-amz-date` or an `x-amz-*` header present in the request is not signed.
    RequiredHeaderNotSigned,
    /// The credential scope date is not the date of `x-amz-date`.
    ScopeDateMismatch,
    /// The credential scope names another region.
    WrongRegion,
    /// The credential scope names another service.
    WrongService,
    /// The access key id is not one of the accepted credentials.
    UnknownAccessKey,
    /// The credential set has a session token but the request carries none.
    MissingSecurityToken,
    /// The request's `x-amz-security-token` is not the credential set's token.
    WrongSecurityToken,
    /// The request carries `x-amz-security-token` for a long-term key.
    UnexpectedSecurityToken,
    /// `x-amz-date` is older than `now - max_skew`.
    RequestExpired,
    /// `x-amz-date` is later than `now + max_skew`.
    RequestNotYetValid,
    /// `x-amz-content-sha256` does not match the body received.
    PayloadHashMismatch,
    /// The signature does not match.
    SignatureMismatch,
    /// Everything else is right, but the credential set has expired
    /// ([`Credential::expires_at`]).
    ExpiredToken,
}

impl Reason {
    /// The AWS error type (`x-amzn-ErrorType` and `__type`).
    pub fn error_type(self) -> &'static str {
        match self {
            Reason::MissingAuthorization
            | Reason::MalformedAuthorization
            | Reason::UnsupportedAlgorithm
            | Reason::MissingDate
            | Reason::MalformedDate
            | Reason::SignedHeaderAbsent
            | Reason::RequiredHeaderNotSigned => "IncompleteSignatureException",
            Reason::UnknownAccessKey => "UnrecognizedClientException",
            Reason::MissingSecurityToken
            | Reason::WrongSecurityToken
            | Reason::UnexpectedSecurityToken => "InvalidClientTokenId",
            Reason::ScopeDateMismatch
            | Reason::WrongRegion
            | Reason::WrongService
            | Reason::RequestExpired
            | Reason::RequestNotYetValid
            | Reason::PayloadHashMismatch
            | Reason::SignatureMismatch => "InvalidSignatureException",
            Reason::ExpiredToken => "ExpiredTokenException",
        }
    }

    /// A short, stable, machine-friendly name.
    pub fn code(self) -> &'static str {
        match self {
            Reason::MissingAuthorization => "missing_authorization",
            Reason::MalformedAuthorization => "malformed_authorization",
            Reason::UnsupportedAlgorithm => "unsupported_algorithm",
            Reason::MissingDate => "missing_x_amz_date",
            Reason::MalformedDate => "malformed_x_amz_date",
            Reason::SignedHeaderAbsent => "signed_header_absent",
            Reason::RequiredHeaderNotSigned => "required_header_not_signed",
            Reason::ScopeDateMismatch => "scope_date_mismatch",
            Reason::WrongRegion => "wrong_region",
            Reason::WrongService => "wrong_service",
            Reason::UnknownAccessKey => "unknown_access_key",
            Reason::MissingSecurityToken => "missing_security_token",
            Reason::WrongSecurityToken => "wrong_security_token",
            Reason::UnexpectedSecurityToken => "unexpected_security_token",
            Reason::RequestExpired => "request_expired",
            Reason::RequestNotYetValid => "request_not_yet_valid",
            Reason::PayloadHashMismatch => "payload_hash_mismatch",
            Reason::SignatureMismatch => "signature_mismatch",
            Reason::ExpiredToken => "expired_token",
        }
    }
}

/// A verification failure: the reason and a human-readable message (never containing secrets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyError {
    pub reason: Reason,
    pub message: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.error_type(), self.message)
    }
}

impl std::error::Error for VerifyError {}

/// The outcome of [`verify`], with everything computed on the way.
#[derive(Clone, Debug)]
pub struct Verification {
    /// `Ok(())` when the request is authentic and acceptable.
    pub outcome: Result<(), VerifyError>,
    /// The access key id from the credential scope, once the header was parsed.
    pub access_key_id: Option<String>,
    /// The `SignedHeaders` list, once the header was parsed.
    pub signed_headers: Option<Vec<String>>,
    /// The canonical request the verifier computed, once it got that far.
    pub canonical_request: Option<String>,
    /// The string to sign the verifier computed, once it got that far.
    pub string_to_sign: Option<String>,
}

impl Verification {
    pub fn is_verified(&self) -> bool {
        self.outcome.is_ok()
    }

    /// The failure, if any.
    pub fn error(&self) -> Option<&VerifyError> {
        self.outcome.as_ref().err()
    }
}

/// The parsed `Authorization` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    /// `YYYYMMDD` from the credential scope.
    pub scope_date: String,
    pub scope_region: String,
    pub scope_service: String,
    pub signed_headers: Vec<String>,
    /// Lowercase hex, 64 digits.
    pub signature: String,
}

impl Authorization {
    /// `date/region/service/aws4_request`
    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/{SCOPE_TERMINATOR}",
            self.scope_date, self.scope_region, self.scope_service
        )
    }
}

fn err(reason: Reason, message: impl Into<String>) -> VerifyError {
    VerifyError {
        reason,
        message: message.into(),
    }
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Parses `AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request,
/// SignedHeaders=a;b;c, Signature=hex`.
pub fn parse_authorization(value: &str) -> Result<Authorization, VerifyError> {
    let value = value.trim_matches(|c: char| c == ' ' || c == '\t');
    let (algorithm, rest) = match value.split_once([' ', '\t']) {
        Some((a, r)) => (a, r),
        None => (value, ""),
    };
    if algorithm != ALGORITHM {
        if algorithm.is_empty() || algorithm.contains('=') {
            return Err(err(
                Reason::MalformedAuthorization,
                format!("Authorization header must start with '{ALGORITHM} '"),
            ));
        }
        return Err(err(
            Reason::UnsupportedAlgorithm,
            format!("unsupported signing algorithm '{algorithm}'; expected '{ALGORITHM}'"),
        ));
    }
    let mut credential: Option<&str> = None;
    let mut signed_headers: Option<&str> = None;
    let mut signature: Option<&str> = None;
    for part in rest.split(',') {
        let part = part.trim_matches(|c: char| c == ' ' || c == '\t');
        if part.is_empty() {
            return Err(err(
                Reason::MalformedAuthorization,
                "Authorization header has an empty component",
            ));
        }
        let Some((key, val)) = part.split_once('=') else {
            return Err(err(
                Reason::MalformedAuthorization,
                format!("Authorization component '{part}' is not key=value"),
            ));
        };
        let slot = match key {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            other => {
                return Err(err(
                    Reason::MalformedAuthorization,
                    format!("unexpected Authorization component '{other}'"),
                ))
            }
        };
        if slot.is_some() {
            return Err(err(
                Reason::MalformedAuthorization,
                format!("Authorization component '{key}' appears more than once"),
            ));
        }
        *slot = Some(val);
    }
    let missing = |name: &str| {
        err(
            Reason::MalformedAuthorization,
            format!("Authorization header requires a '{name}' component"),
        )
    };
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed_headers = signed_headers.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| missing("Signature"))?;

    let scope: Vec<&str> = credential.split('/').collect();
    let [akid, date, region, service, terminator] = scope.as_slice() else {
        return Err(err(
            Reason::MalformedAuthorization,
            format!(
                "Credential must be AKID/YYYYMMDD/region/service/{SCOPE_TERMINATOR}, got {} '/'-separated parts",
                scope.len()
            ),
        ));
    };
    if akid.is_empty() || region.is_empty() || service.is_empty() {
        return Err(err(
            Reason::MalformedAuthorization,
            "Credential has an empty access key id, region or service",
        ));
    }
    if timefmt::parse_yyyymmdd(date).is_none() {
        return Err(err(
            Reason::MalformedAuthorization,
            format!("Credential scope date '{date}' is not a valid YYYYMMDD date"),
        ));
    }
    if *terminator != SCOPE_TERMINATOR {
        return Err(err(
            Reason::MalformedAuthorization,
            format!(
                "Credential should be scoped with a valid terminator: '{SCOPE_TERMINATOR}', not '{terminator}'"
            ),
        ));
    }

    let names: Vec<String> = signed_headers.split(';').map(str::to_string).collect();
    for name in &names {
        if name.is_empty() || !name.chars().all(is_token_char) {
            return Err(err(
                Reason::MalformedAuthorization,
                format!("SignedHeaders '{signed_headers}' contains an invalid header name"),
            ));
        }
        if name.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(err(
                Reason::MalformedAuthorization,
                format!("SignedHeaders must be lowercase, got '{name}'"),
            ));
        }
    }
    if names.windows(2).any(|w| matches!(w, [a, b] if a >= b)) {
        return Err(err(
            Reason::MalformedAuthorization,
            format!("SignedHeaders '{signed_headers}' must be sorted and without duplicates"),
        ));
    }

    if signature.len() != 64
        || !signature
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(err(
            Reason::MalformedAuthorization,
            "Signature must be 64 lowercase hexadecimal digits",
        ));
    }

    Ok(Authorization {
        access_key_id: (*akid).to_string(),
        scope_date: (*date).to_string(),
        scope_region: (*region).to_string(),
        scope_service: (*service).to_string(),
        signed_headers: names,
        signature: signature.to_string(),
    })
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn push_encoded(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(
        HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0'),
    ));
    out.push(char::from(
        HEX.get(usize::from(b & 0xF)).copied().unwrap_or(b'0'),
    ));
}

/// Percent-encodes every byte outside `A-Za-z0-9-._~` (uppercase hex), keeping `/` when asked.
pub fn uri_encode(input: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(input.len());
    for &b in input {
        if is_unreserved(b) || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            push_encoded(&mut out, b);
        }
    }
    out
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `application/x-www-form-urlencoded` text: `%XY` escapes and `+` as space; a `%` not
/// followed by two hex digits is kept literally.
pub fn form_decode(input: &str) -> Vec<u8> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_value);
                let lo = bytes.get(i + 2).copied().and_then(hex_value);
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    out.push((hi << 4) | lo);
                    i += 3;
                } else {
                    out.push(b'%');
                    i += 1;
                }
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Removes `.` and `..` segments and empty segments (repeated slashes) from an absolute path,
/// following RFC 3986 section 5.2.4; a trailing slash (or a trailing `.`/`..` segment) keeps the
/// result ending in `/`. Percent-escapes are not decoded.
pub fn normalize_path(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut last = "";
    for segment in path.split('/') {
        last = segment;
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut result = String::with_capacity(path.len() + 1);
    result.push('/');
    result.push_str(&out.join("/"));
    let wants_trailing = matches!(last, "" | "." | "..");
    if wants_trailing && !out.is_empty() {
        result.push('/');
    }
    result
}

/// The canonical URI: the path (normalised when asked), then URI-encoded with `/` kept. The path
/// is taken as received, so existing percent-escapes are encoded again (`%3D` becomes `%253D`),
/// as AWS does for every service but S3.
pub fn canonical_uri(path: &str, normalize: bool) -> String {
    let path = if normalize {
        normalize_path(path)
    } else if path.is_empty() {
        "/".to_string()
    } else {
        path.to_string()
    };
    uri_encode(path.as_bytes(), true)
}

/// The canonical query string: each `key=value` pair decoded and re-encoded, sorted by key then
/// value, joined by `&`. Empty pairs (`a=1&&b=2`) are dropped; a key without `=` gets an empty
/// value.
pub fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&form_decode(k), false),
                uri_encode(&form_decode(v), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Trims a header value and collapses every inner run of whitespace (spaces, tabs and the line
/// breaks of obsolete folded values) into one space.
pub fn trim_header_value(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut pending_space = false;
    for &b in value {
        if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
            pending_space = !out.is_empty();
        } else {
            if pending_space {
                out.push(b' ');
                pending_space = false;
            }
            out.push(b);
        }
    }
    out
}

/// Hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail; fall back to an empty MAC anyway.
    match <HmacSha256 as KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// The SigV4 signing key: `HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date), region), service),
/// "aws4_request")`.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, SCOPE_TERMINATOR.as_bytes())
}

/// The hex signature of a string to sign.
pub fn compute_signature(
    secret: &str,
    date: &str,
    region: &str,
    service: &str,
    string_to_sign: &str,
) -> String {
    hex::encode(hmac_sha256(
        &signing_key(secret, date, region, service),
        string_to_sign.as_bytes(),
    ))
}

/// `AWS4-HMAC-SHA256\n<amz date>\n<scope>\n<hex sha256 of canonical request>`
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &[u8]) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request)
    )
}

/// Header values grouped by lowercase name, each name's values in the order received.
struct HeaderIndex<'a> {
    entries: Vec<(String, Vec<&'a [u8]>)>,
}

impl<'a> HeaderIndex<'a> {
    fn new(headers: &'a [(&'a str, &'a [u8])]) -> Self {
        let mut entries: Vec<(String, Vec<&'a [u8]>)> = Vec::new();
        for (name, value) in headers {
            let lower = name.trim().to_ascii_lowercase();
            match entries.iter_mut().find(|(n, _)| *n == lower) {
                Some((_, values)) => values.push(value),
                None => entries.push((lower, vec![value])),
            }
        }
        HeaderIndex { entries }
    }

    fn get(&self, name: &str) -> &[&'a [u8]] {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
            .unwrap_or_default()
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }
}

/// The canonical request (as bytes: header values need not be UTF-8):
/// method, canonical URI, canonical query, canonical headers, signed headers, payload hash.
pub fn canonical_request(
    request: &Request<'_>,
    signed_headers: &[String],
    normalize_path: bool,
    payload_hash: &str,
) -> Vec<u8> {
    let index = HeaderIndex::new(request.headers);
    canonical_request_indexed(
        request,
        &index,
        signed_headers,
        normalize_path,
        payload_hash,
    )
}

fn canonical_request_indexed(
    request: &Request<'_>,
    index: &HeaderIndex<'_>,
    signed_headers: &[String],
    normalize_path: bool,
    payload_hash: &str,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(request.method.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_uri(request.path, normalize_path).as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_query(request.query).as_bytes());
    out.push(b'\n');
    for name in signed_headers {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        for (i, value) in index.get(name).iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&trim_header_value(value));
        }
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(signed_headers.join(";").as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload_hash.as_bytes());
    out
}

fn single_header<'a>(
    index: &HeaderIndex<'a>,
    name: &str,
    missing: Reason,
) -> Result<&'a [u8], VerifyError> {
    match index.get(name) {
        [] => Err(err(
            missing,
            format!("request has no '{name}' header (required for SigV4)"),
        )),
        [one] => Ok(one),
        _ => Err(err(
            Reason::MalformedAuthorization,
            format!("request has more than one '{name}' header"),
        )),
    }
}

fn skew_message(amz_date: &str, now: SystemTime, max_skew: Duration, expired: bool) -> String {
    let now_s = timefmt::system_time_to_unix(now);
    let skew = i64::try_from(max_skew.as_secs()).unwrap_or(i64::MAX);
    let fmt = |s: i64| timefmt::format_amz_date(timefmt::unix_to_system_time(s));
    if expired {
        format!(
            "Signature expired: {amz_date} is now earlier than {} ({} - {} s.)",
            fmt(now_s.saturating_sub(skew)),
            fmt(now_s),
            skew
        )
    } else {
        format!(
            "Signature not yet current: {amz_date} is still later than {} ({} + {} s.)",
            fmt(now_s.saturating_add(skew)),
            fmt(now_s),
            skew
        )
    }
}

/// Verifies a header-signed SigV4 request against `policy`.
pub fn verify(request: &Request<'_>, policy: &Policy<'_>) -> Verification {
    let mut v = Verification {
        outcome: Ok(()),
        access_key_id: None,
        signed_headers: None,
        canonical_request: None,
        string_to_sign: None,
    };
    v.outcome = verify_into(request, policy, &mut v);
    v
}

/// What step 4 computes from the bytes received.
struct Computed {
    /// Hex SHA-256 of the body received.
    payload_hash: String,
    canonical_request: Vec<u8>,
    string_to_sign: String,
}

/// The steps of [`verify`], in order: the first that fails decides the outcome. What the steps
/// compute (the parsed header, the canonical request, the string to sign) is kept in `v` as soon
/// as it exists.
fn verify_into(
    request: &Request<'_>,
    policy: &Policy<'_>,
    v: &mut Verification,
) -> Result<(), VerifyError> {
    let index = HeaderIndex::new(request.headers);

    // 1. The Authorization header.
    let auth = authorization(&index)?;
    v.access_key_id = Some(auth.access_key_id.clone());
    v.signed_headers = Some(auth.signed_headers.clone());

    // 2. x-amz-date.
    let (amz_date, request_time) = request_date(&index)?;

    // 3. Every signed header must be present.
    check_signed_headers_present(&index, &auth)?;

    // 4. Canonical request and string to sign, from the bytes actually received.
    let computed = compute(request, &index, &auth, amz_date, policy.normalize_path);
    v.canonical_request = Some(String::from_utf8_lossy(&computed.canonical_request).into_owned());
    v.string_to_sign = Some(computed.string_to_sign.clone());

    // 5. Headers that must be signed.
    check_required_headers_signed(&index, &auth)?;

    // 6. Credential scope.
    check_credential_scope(&auth, amz_date, policy)?;

    // 7. The access key and its session token.
    let credential = credential(&index, &auth, policy.credentials)?;

    // 8. Clock skew.
    check_clock_skew(amz_date, request_time, policy)?;

    // 9. x-amz-content-sha256 must describe the body received.
    check_payload_hash(&index, &computed.payload_hash, request.body.len())?;

    // 10. The signature, compared in constant time.
    check_signature(credential, &auth, &computed.string_to_sign)?;

    // 11. An expired temporary credential. Checked last, so a request is only reported as
    // expired when it would otherwise have been accepted.
    check_not_expired(credential, policy.now)
}

/// Step 1: the one `Authorization` header, parsed.
fn authorization(index: &HeaderIndex<'_>) -> Result<Authorization, VerifyError> {
    let auth_raw = single_header(index, "authorization", Reason::MissingAuthorization)?;
    let auth_str = std::str::from_utf8(auth_raw).map_err(|_| {
        err(
            Reason::MalformedAuthorization,
            "Authorization header is not valid UTF-8",
        )
    })?;
    parse_authorization(auth_str)
}

/// Step 2: the one `x-amz-date` header (trimmed) and the Unix seconds it names.
fn request_date<'a>(index: &HeaderIndex<'a>) -> Result<(&'a str, i64), VerifyError> {
    let date_raw = single_header(index, "x-amz-date", Reason::MissingDate)?;
    let amz_date = std::str::from_utf8(date_raw)
        .map(str::trim)
        .map_err(|_| err(Reason::MalformedDate, "x-amz-date is not valid UTF-8"))?;
    let request_time = timefmt::parse_amz_date(amz_date).ok_or_else(|| {
        err(
            Reason::MalformedDate,
            format!("x-amz-date '{amz_date}' is not in the ISO-8601 basic format YYYYMMDDTHHMMSSZ"),
        )
    })?;
    Ok((amz_date, request_time))
}

/// Step 3: every header `SignedHeaders` lists is in the request.
fn check_signed_headers_present(
    index: &HeaderIndex<'_>,
    auth: &Authorization,
) -> Result<(), VerifyError> {
    for name in &auth.signed_headers {
        if index.get(name).is_empty() {
            return Err(err(
                Reason::SignedHeaderAbsent,
                format!("SignedHeaders lists '{name}' but the request has no such header"),
            ));
        }
    }
    Ok(())
}

/// Step 4: the payload hash, the canonical request and the string to sign, from the bytes
/// actually received.
fn compute(
    request: &Request<'_>,
    index: &HeaderIndex<'_>,
    auth: &Authorization,
    amz_date: &str,
    normalize_path: bool,
) -> Computed {
    let payload_hash = sha256_hex(request.body);
    let canonical_request = canonical_request_indexed(
        request,
        index,
        &auth.signed_headers,
        normalize_path,
        &payload_hash,
    );
    let string_to_sign = string_to_sign(amz_date, &auth.scope(), &canonical_request);
    Computed {
        payload_hash,
        canonical_request,
        string_to_sign,
    }
}

/// Step 5: `host`, `x-amz-date` and every `x-amz-*` header present are signed.
fn check_required_headers_signed(
    index: &HeaderIndex<'_>,
    auth: &Authorization,
) -> Result<(), VerifyError> {
    let signed = |name: &str| auth.signed_headers.iter().any(|h| h == name);
    for required in ["host", "x-amz-date"] {
        if !signed(required) {
            return Err(err(
                Reason::RequiredHeaderNotSigned,
                format!("'{required}' must be listed in SignedHeaders"),
            ));
        }
    }
    if let Some(unsigned) = index
        .names()
        .find(|n| n.starts_with("x-amz-") && !signed(n))
    {
        return Err(err(
            Reason::RequiredHeaderNotSigned,
            format!("header '{unsigned}' is present but not listed in SignedHeaders"),
        ));
    }
    Ok(())
}

/// Step 6: the credential scope names the date of `x-amz-date`, the policy's region and its
/// service.
fn check_credential_scope(
    auth: &Authorization,
    amz_date: &str,
    policy: &Policy<'_>,
) -> Result<(), VerifyError> {
    let date_part = amz_date.get(0..8).unwrap_or_default();
    if auth.scope_date != date_part {
        return Err(err(
            Reason::ScopeDateMismatch,
            format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{date_part}', from '{amz_date}'",
                auth.scope_date
            ),
        ));
    }
    if auth.scope_region != policy.region {
        return Err(err(
            Reason::WrongRegion,
            format!(
                "Credential should be scoped to a valid region, not '{}'; expected '{}'",
                auth.scope_region, policy.region
            ),
        ));
    }
    if auth.scope_service != policy.service {
        return Err(err(
            Reason::WrongService,
            format!(
                "Credential should be scoped to correct service: '{}', not '{}'",
                policy.service, auth.scope_service
            ),
        ));
    }
    Ok(())
}

/// Step 7: the accepted credential set of the access key id (the first with it), once the
/// request's session token is the set's.
fn credential<'c>(
    index: &HeaderIndex<'_>,
    auth: &Authorization,
    credentials: &'c [Credential],
) -> Result<&'c Credential, VerifyError> {
    let credential = credentials
        .iter()
        .find(|c| c.access_key_id == auth.access_key_id)
        .ok_or_else(|| {
            err(
                Reason::UnknownAccessKey,
                format!(
                    "The access key id '{}' is not recognized (the security token included in the request is invalid)",
                    auth.access_key_id
                ),
            )
        })?;
    check_session_token(index, credential, &auth.access_key_id)?;
    Ok(credential)
}

/// Step 7, continued: a temporary credential needs its own token in exactly one
/// `x-amz-security-token` (compared in constant time); a long-term one needs none.
fn check_session_token(
    index: &HeaderIndex<'_>,
    credential: &Credential,
    access_key_id: &str,
) -> Result<(), VerifyError> {
    let tokens = index.get("x-amz-security-token");
    match (&credential.session_token, tokens) {
        (Some(_), []) => Err(err(
            Reason::MissingSecurityToken,
            format!(
                "access key id '{access_key_id}' is a temporary credential but the request has no x-amz-security-token"
            ),
        )),
        (Some(expected), [got]) => {
            let got = trim_header_value(got);
            if bool::from(got.as_slice().ct_eq(expected.as_bytes())) {
                Ok(())
            } else {
                Err(err(
                    Reason::WrongSecurityToken,
                    "The security token included in the request is invalid",
                ))
            }
        }
        (Some(_), _) => Err(err(
            Reason::WrongSecurityToken,
            "the request has more than one x-amz-security-token header",
        )),
        (None, []) => Ok(()),
        (None, _) => Err(err(
            Reason::UnexpectedSecurityToken,
            format!(
                "the request carries x-amz-security-token but access key id '{access_key_id}' is a long-term credential without one"
            ),
        )),
    }
}

/// Step 8: `x-amz-date` is within `max_skew` of `now`, either way.
fn check_clock_skew(
    amz_date: &str,
    request_time: i64,
    policy: &Policy<'_>,
) -> Result<(), VerifyError> {
    let now = timefmt::system_time_to_unix(policy.now);
    let skew = i64::try_from(policy.max_skew.as_secs()).unwrap_or(i64::MAX);
    if request_time < now.saturating_sub(skew) {
        return Err(err(
            Reason::RequestExpired,
            skew_message(amz_date, policy.now, policy.max_skew, true),
        ));
    }
    if request_time > now.saturating_add(skew) {
        return Err(err(
            Reason::RequestNotYetValid,
            skew_message(amz_date, policy.now, policy.max_skew, false),
        ));
    }
    Ok(())
}

/// Step 9: an `x-amz-content-sha256` header, when present, is the one hash of the body received.
fn check_payload_hash(
    index: &HeaderIndex<'_>,
    payload_hash: &str,
    body_len: usize,
) -> Result<(), VerifyError> {
    let content_hashes = index.get("x-amz-content-sha256");
    if content_hashes.is_empty() {
        return Ok(());
    }
    let claimed: Vec<String> = content_hashes
        .iter()
        .map(|h| String::from_utf8_lossy(&trim_header_value(h)).into_owned())
        .collect();
    if claimed.len() != 1 || claimed.first().map(String::as_str) != Some(payload_hash) {
        return Err(err(
            Reason::PayloadHashMismatch,
            format!(
                "body does not match x-amz-content-sha256: header says '{}', SHA-256 of the {body_len} body bytes received is '{payload_hash}'",
                claimed.join(","),
            ),
        ));
    }
    Ok(())
}

/// Step 10: the signature is the one the credential's secret gives the string to sign, compared
/// in constant time.
fn check_signature(
    credential: &Credential,
    auth: &Authorization,
    string_to_sign: &str,
) -> Result<(), VerifyError> {
    let key = signing_key(
        &credential.secret_access_key,
        &auth.scope_date,
        &auth.scope_region,
        &auth.scope_service,
    );
    let provided = hex::decode(&auth.signature).map_err(|_| {
        err(
            Reason::MalformedAuthorization,
            "Signature is not hexadecimal",
        )
    })?;
    let matches = match <HmacSha256 as KeyInit>::new_from_slice(&key) {
        Ok(mut mac) => {
            mac.update(string_to_sign.as_bytes());
            mac.verify_slice(&provided).is_ok()
        }
        Err(_) => false,
    };
    if !matches {
        return Err(err(
            Reason::SignatureMismatch,
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Compare your canonical request and string to sign with the ones in this response.",
        ));
    }
    Ok(())
}

/// Step 11: a temporary credential has not expired by `now`.
fn check_not_expired(credential: &Credential, now: SystemTime) -> Result<(), VerifyError> {
    if credential.is_expired_at(now) {
        return Err(err(Reason::ExpiredToken, EXPIRED_TOKEN_MESSAGE));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize_path(""), "/");
        assert_eq!(normalize_path("/"), "/");
        assert_eq!(normalize_path("//"), "/");
        assert_eq!(normalize_path("/example/.."), "/");
        assert_eq!(normalize_path("/a/b/../.."), "/");
        assert_eq!(normalize_path("/a/b/../../.."), "/");
        assert_eq!(normalize_path("//example//"), "/example/");
        assert_eq!(normalize_path("/./example"), "/example");
        assert_eq!(normalize_path("/a/./b/."), "/a/b/");
        assert_eq!(normalize_path("/a/b/.."), "/a/");
        assert_eq!(normalize_path("/a/%2E%2E/b"), "/a/%2E%2E/b");
        assert_eq!(
            normalize_path("/datastore/ds/r4/Patient/example"),
            "/datastore/ds/r4/Patient/example"
        );
    }

    #[test]
    fn encodes_uri_twice() {
        assert_eq!(
            canonical_uri("/test/@connections/JBDvjfGEIAMCERw%3D", true),
            "/test/%40connections/JBDvjfGEIAMCERw%253D"
        );
        assert_eq!(canonical_uri("/example space/", false), "/example%20space/");
        assert_eq!(canonical_uri("", false), "/");
    }

    #[test]
    fn canonicalizes_queries() {
        assert_eq!(canonical_query(""), "");
        assert_eq!(canonical_query("b=2&a=1&a=0"), "a=0&a=1&b=2");
        assert_eq!(canonical_query("a&&b="), "a=&b=");
        assert_eq!(canonical_query("x=a+b%2Bc%zz"), "x=a%20b%2Bc%25zz");
        assert_eq!(canonical_query("%E1%88%B4=bar"), "%E1%88%B4=bar");
    }

    #[test]
    fn trims_values() {
        assert_eq!(trim_header_value(b"  a   b \t c  "), b"a b c");
        assert_eq!(
            trim_header_value(b"value1\n  value2\n     value3"),
            b"value1 value2 value3"
        );
        assert_eq!(trim_header_value(b"   "), b"");
    }

    #[test]
    fn parses_authorization() {
        let a = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/healthlake/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        )
        .expect("parses");
        assert_eq!(a.access_key_id, "AKID");
        assert_eq!(a.scope(), "20150830/us-east-1/healthlake/aws4_request");
        assert_eq!(a.signed_headers, vec!["host", "x-amz-date"]);

        let bad = |s: &str| parse_authorization(s).map(|_| ()).unwrap_err().reason;
        assert_eq!(bad(""), Reason::MalformedAuthorization);
        assert_eq!(
            bad("AWS4-HMAC-SHA512 Credential=x"),
            Reason::UnsupportedAlgorithm
        );
        assert_eq!(bad("AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/healthlake/aws4_request, SignedHeaders=host"), Reason::MalformedAuthorization);
        assert_eq!(bad("AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/healthlake/aws4_request, SignedHeaders=x-amz-date;host, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"), Reason::MalformedAuthorization);
        assert_eq!(bad("AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/healthlake/aws4_request, SignedHeaders=host;x-amz-date, Signature=XYZ"), Reason::MalformedAuthorization);
        assert_eq!(bad("AWS4-HMAC-SHA256 Credential=AKID/2015083/us-east-1/healthlake/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"), Reason::MalformedAuthorization);
        assert_eq!(bad("AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/healthlake/aws5_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"), Reason::MalformedAuthorization);
    }

    #[test]
    fn parses_credentials_without_leaking() {
        let c = Credential::parse("AKID:sec/ret+:tok:en").expect("parses");
        assert_eq!(c.access_key_id, "AKID");
        assert_eq!(c.secret_access_key, "sec/ret+");
        assert_eq!(c.session_token.as_deref(), Some("tok:en"));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("sec/ret") && !dbg.contains("tok:en"), "{dbg}");
        let e = Credential::parse("AKID:").unwrap_err();
        assert!(e.contains("AKID"));
        let e = Credential::parse("AKID:s3cr3t:").unwrap_err();
        assert!(!e.contains("s3cr3t"), "{e}");
        assert!(Credential::parse(":x").is_err());
    }

    #[test]
    fn known_signing_key() {
        // The example from the SigV4 documentation ("derive a signing key").
        let key = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20120215",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex::encode(key),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }
}
