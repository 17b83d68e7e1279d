//! The STS recording proxy: a second listener whose every request is forwarded unchanged to the
//! upstream STS (method, path and query, headers in their order and spelling, `Host` included,
//! body), and whose upstream answer is returned unchanged (status, headers, body). Only
//! hop-by-hop headers are dropped, and never one the request's SigV4 `SignedHeaders` lists, so the
//! upstream verifies the caller's signature over exactly the bytes the caller signed.
//!
//! One upstream connection per call (plain HTTP/1.1, loopback only), 10 s for the whole exchange.
//! Each answer is recorded in the [`App`]'s STS ledger, which learns the credential sets STS
//! issues.
//!
//! The exceptions: an `AssumeRole` call takes the next STS fault queued with
//! `PUT /_emulator/sts/faults` ([`super::faults`]), which either answers in the upstream's place
//! or rewrites the `Expiration` of its answer; and with `--web-identity-token-file`, an
//! `AssumeRoleWithWebIdentity` call without the file's token is answered `InvalidIdentityToken`
//! by the proxy ([`super::web_identity`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::HeaderValue;
use http::{HeaderMap, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::faults::{rewrite_expiration, CannedAnswer, StsFault};
use super::{action_of, web_identity, CallNotes, UpstreamOutcome};
use crate::server::{App, MAX_BODY_BYTES, SHUTTING_DOWN};

/// How long one forwarded call may take, connecting included.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// Headers that describe one connection, not the message (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

type Resp = Response<Full<Bytes>>;

/// The upstream STS: `http://HOST[:PORT]`, HOST a loopback address or `localhost`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StsUpstream {
    url: String,
    host: String,
    port: u16,
}

impl StsUpstream {
    /// Parses and checks `--sts-upstream`: plain `http`, a loopback host (`127.0.0.0/8`,
    /// `[::1]` or `localhost`), an optional port (80 by default), no user info, and no path
    /// (`/` at most), query or fragment: requests are forwarded with their own path.
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("'{url}' is not a URL: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!(
                "'{url}' must be a plain http:// URL (the proxy speaks HTTP/1.1 to a loopback upstream)"
            ));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("'{url}' has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("'{url}' must not contain user info"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() || url.contains('#') {
            return Err(format!(
                "'{url}' must not have a path, query or fragment: requests keep their own path"
            ));
        }
        let host = authority.host();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = bare.eq_ignore_ascii_case("localhost")
            || bare
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err(format!(
                "'{url}': the upstream must be on loopback (127.0.0.0/8, [::1] or localhost), not '{host}'"
            ));
        }
        Ok(StsUpstream {
            url: url.trim_end_matches('/').to_string(),
            host: bare.to_string(),
            port: authority.port_u16().unwrap_or(80),
        })
    }

    /// The URL as given (without a trailing `/`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Connects to the first loopback address the host resolves to that accepts.
    async fn connect(&self) -> Result<TcpStream, String> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?
            .filter(|a| a.ip().is_loopback())
            .collect();
        let mut last = format!("{} resolves to no loopback address", self.host);
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    // Only a latency optimisation.
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => last = format!("cannot connect to {addr}: {e}"),
            }
        }
        Err(last)
    }

    /// Sends one request on a new connection and reads the whole answer.
    async fn exchange(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<(http::response::Parts, Bytes), String> {
        let stream = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .preserve_header_case(true)
            .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {} failed: {e}", self.url))?;
        let _driver = AbortOnDrop(tokio::spawn(async move {
            // Its errors surface through `send_request` or the body.
            let _ = conn.await;
        }));
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("{} did not answer: {e}", self.url))?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| format!("cannot read the answer of {}: {e}", self.url))?
            .to_bytes();
        Ok((parts, body))
    }
}

/// Aborts the connection task when the exchange ends (or times out).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The header names `SignedHeaders=` lists in an `Authorization: AWS4-HMAC-SHA256 ...` header
/// (read leniently: the upstream, not the proxy, judges the signature).
fn signed_header_names(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split_once("SignedHeaders="))
        .flat_map(|(_, rest)| {
            rest.split([',', ' '])
                .next()
                .unwrap_or_default()
                .split(';')
                .map(|n| n.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The headers without the hop-by-hop ones (the fixed list and those the `Connection` header
/// names), except those in `keep`; order and repeated values preserved.
fn end_to_end(headers: &HeaderMap, keep: &[String]) -> HeaderMap {
    let named_by_connection: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let n = name.as_str();
        let hop = HOP_BY_HOP.contains(&n) || named_by_connection.iter().any(|c| c == n);
        if !hop || keep.iter().any(|k| k == n) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// The proxy's own answer when it could not get the upstream's.
fn failure(status: StatusCode, message: &str) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(format!(
        "healthlake-emulator STS proxy: {message}\n"
    ))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// What became of a call sent on to the upstream: the answer for the caller, and the status and
/// body the ledger reads (or why there is no upstream answer).
struct Relayed {
    resp: Resp,
    status: u16,
    body: Bytes,
    failure: Option<String>,
}

/// Sends a received request on to the upstream, unchanged but for the hop-by-hop headers, and
/// returns its answer (or the proxy's own `400`/`502`/`504`).
async fn relay(upstream: &StsUpstream, parts: http::request::Parts, body: Bytes) -> Relayed {
    let keep = signed_header_names(&parts.headers);
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = parts.method;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = end_to_end(&parts.headers, &keep);
    // The original spelling of the header names travels in the extensions.
    *req.extensions_mut() = parts.extensions;
    let failed = |status: StatusCode, text: String| Relayed {
        resp: failure(status, &text),
        status: status.as_u16(),
        body: Bytes::new(),
        failure: Some(text),
    };
    let uri = match path_and_query.parse::<Uri>() {
        Ok(uri) => uri,
        Err(e) => {
            return failed(
                StatusCode::BAD_REQUEST,
                format!("cannot forward the request target '{path_and_query}': {e}"),
            )
        }
    };
    *req.uri_mut() = uri;
    match tokio::time::timeout(UPSTREAM_TIMEOUT, upstream.exchange(req)).await {
        Ok(Ok((up, body))) => {
            let mut resp = Response::new(Full::new(body.clone()));
            *resp.status_mut() = up.status;
            *resp.headers_mut() = end_to_end(&up.headers, &[]);
            *resp.extensions_mut() = up.extensions;
            Relayed {
                resp,
                status: up.status.as_u16(),
                body,
                failure: None,
            }
        }
        Ok(Err(e)) => failed(StatusCode::BAD_GATEWAY, e),
        Err(_) => failed(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "{} did not answer within {} s",
                upstream.url,
                UPSTREAM_TIMEOUT.as_secs()
            ),
        ),
    }
}

/// The proxy's own answer for an STS fault that does not call the upstream.
fn canned_response(answer: CannedAnswer, request_id: &str) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(answer.body)));
    *resp.status_mut() = answer.status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(answer.content_type),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}

/// Applies an STS fault that rewrites the upstream's answer (`bad-expiration`, `expired`) to a
/// `200` with an `Expiration`: the caller gets the rewritten body (with its `Content-Length`
/// corrected). Returns the body the ledger reads: the upstream's for `bad-expiration` (the set
/// is accepted with its real expiry), the rewritten one for `expired` (accepted as expired).
/// Any other answer passes unchanged.
fn rewrite_answer(fault: &StsFault, relayed: &mut Relayed, now: SystemTime) -> Bytes {
    let Some((expiration, ledger_reads_rewritten)) = fault.expiration_rewrite(now) else {
        return relayed.body.clone();
    };
    if relayed.failure.is_some() || relayed.status != 200 {
        return relayed.body.clone();
    }
    let Some(rewritten) = rewrite_expiration(&relayed.body, &expiration) else {
        return relayed.body.clone();
    };
    let rewritten = Bytes::from(rewritten);
    relayed.resp.headers_mut().insert(
        http::header::CONTENT_LENGTH,
        HeaderValue::from(rewritten.len()),
    );
    *relayed.resp.body_mut() = Full::new(rewritten.clone());
    if ledger_reads_rewritten {
        rewritten
    } else {
        relayed.body.clone()
    }
}

/// A request id for an answer the proxy makes up itself.
fn made_up_request_id() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

/// Forwards one received request (its body already read) and records the call. An `AssumeRole`
/// call consumes the next STS fault, if one is queued (`PUT /_emulator/sts/faults`). With
/// `--web-identity-token-file`, an `AssumeRoleWithWebIdentity` call whose `WebIdentityToken` is
/// not the file's content is answered `InvalidIdentityToken` without being forwarded.
pub async fn forward(
    app: &App,
    upstream: &StsUpstream,
    parts: http::request::Parts,
    body: Bytes,
) -> Resp {
    let action = action_of(parts.uri.query(), &body);
    let method = parts.method.clone();
    let log_path = parts.uri.path().to_string();
    let web_identity = action.as_deref() == Some(web_identity::ACTION);
    let token = if web_identity {
        web_identity::token_of(parts.uri.query(), &body)
    } else {
        None
    };
    let token_digest = token.as_deref().map(web_identity::sha256_prefix);
    let token_check = match &app.config().web_identity_token_file {
        Some(file) if web_identity => web_identity::check(file, token.as_deref()),
        _ => web_identity::Check::Accepted,
    };
    drop(token);
    let fault = if action.as_deref() == Some("AssumeRole") {
        app.take_sts_fault()
    } else {
        None
    };
    let notes = CallNotes {
        fault: fault.as_ref(),
        web_identity_token_sha256_prefix: token_digest.as_deref(),
    };
    let request_id = made_up_request_id();
    let canned = fault.and_then(|f| f.canned_answer(&request_id));
    // Answers with a made-up answer instead of the upstream, recording it.
    let answer_instead = |answer: CannedAnswer| {
        let call = app.record_sts_call_noted(
            action.as_deref(),
            UpstreamOutcome::Answered {
                status: answer.status.as_u16(),
                body: &answer.body,
            },
            SystemTime::now(),
            notes,
        );
        (canned_response(answer, &request_id), call)
    };

    let (resp, call) = match (token_check, canned) {
        (web_identity::Check::Unreadable(error), _) => {
            let status = StatusCode::INTERNAL_SERVER_ERROR;
            let call = app.record_sts_call_noted(
                action.as_deref(),
                UpstreamOutcome::Failed {
                    status: status.as_u16(),
                    error: &error,
                },
                SystemTime::now(),
                notes,
            );
            (failure(status, &error), call)
        }
        (web_identity::Check::Refused(message), _) => answer_instead(CannedAnswer {
            status: StatusCode::BAD_REQUEST,
            content_type: "text/xml",
            body: web_identity::invalid_identity_token_xml(message, &request_id).into_bytes(),
        }),
        (web_identity::Check::Accepted, Some(answer)) => answer_instead(answer),
        (web_identity::Check::Accepted, None) => {
            let mut relayed = relay(upstream, parts, body).await;
            let now = SystemTime::now();
            let ledger_body = match &fault {
                Some(f) => rewrite_answer(f, &mut relayed, now),
                None => relayed.body.clone(),
            };
            let outcome = match &relayed.failure {
                Some(error) => UpstreamOutcome::Failed {
                    status: relayed.status,
                    error,
                },
                None => UpstreamOutcome::Answered {
                    status: relayed.status,
                    body: &ledger_body,
                },
            };
            let call = app.record_sts_call_noted(action.as_deref(), outcome, now, notes);
            (relayed.resp, call)
        }
    };
    let resp = if call.proxy_error.as_deref() == Some(SHUTTING_DOWN) {
        failure(StatusCode::SERVICE_UNAVAILABLE, SHUTTING_DOWN)
    } else {
        resp
    };
    if app.config().log_requests {
        let what = match (
            &call.issued_access_key_id,
            &call.error_code,
            &call.proxy_error,
        ) {
            (Some(akid), _, _) => format!(
                "issued {akid} (expires {})",
                call.expiration.as_deref().unwrap_or("?")
            ),
            (None, _, Some(e)) => format!("proxy error: {e}"),
            (None, Some(code), None) => format!("error {code}"),
            (None, None, None) => "forwarded".to_string(),
        };
        let injected = call
            .fault
            .as_deref()
            .map(|f| format!(", injected STS fault {f}"))
            .unwrap_or_default();
        let digest = call
            .web_identity_token_sha256_prefix
            .as_deref()
            .map(|d| format!(", web identity token sha256 {d}..."))
            .unwrap_or_default();
        eprintln!(
            "healthlake-emulator: sts {method} {log_path} {} -> {} {what}{injected}{digest}",
            call.action.as_deref().unwrap_or("(no action)"),
            call.status
        );
    }
    resp
}

/// Reads a request's body (bounded) and forwards it; a body that cannot be read is answered
/// (`413`/`400`) and recorded without reaching the upstream.
async fn handle(app: &App, upstream: &StsUpstream, req: Request<Incoming>) -> Resp {
    let (parts, body) = req.into_parts();
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => forward(app, upstream, parts, collected.to_bytes()).await,
        Err(e) => {
            let (status, text) = if e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body exceeds {MAX_BODY_BYTES} bytes"),
                )
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    format!("could not read the request body: {e}"),
                )
            };
            let action = action_of(parts.uri.query(), b"");
            app.record_sts_call(
                action.as_deref(),
                UpstreamOutcome::Failed {
                    status: status.as_u16(),
                    error: &text,
                },
                SystemTime::now(),
            );
            failure(status, &text)
        }
    }
}

/// Accepts connections forever on the STS listener, forwarding every request to `upstream`.
/// Each request is forwarded in its own task, so a caller that hangs up does not cut a call
/// short: the answer is still recorded (and any credential set it issues accepted).
pub async fn serve_sts_proxy(listener: TcpListener, app: Arc<App>, upstream: Arc<StsUpstream>) {
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("healthlake-emulator: sts proxy: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Only a latency optimisation.
        let _ = stream.set_nodelay(true);
        let app = Arc::clone(&app);
        let upstream = Arc::clone(&upstream);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let app = Arc::clone(&app);
                let upstream = Arc::clone(&upstream);
                async move {
                    let resp = match tokio::spawn(async move { handle(&app, &upstream, req).await })
                        .await
                    {
                        Ok(resp) => resp,
                        Err(e) => failure(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            &format!("the proxy task failed: {e}"),
                        ),
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .preserve_header_case(true)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                if !e.is_incomplete_message() {
                    eprintln!("healthlake-emulator: sts proxy: connection error: {e}");
                }
            }
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::header::HeaderName;

    #[test]
    fn upstream_must_be_loopback_http() {
        let u = StsUpstream::parse("http://127.0.0.1:5000").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.url()),
            ("127.0.0.1", 5000, "http://127.0.0.1:5000")
        );
        let u = StsUpstream::parse("http://localhost/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.url()),
            ("localhost", 80, "http://localhost")
        );
        let u = StsUpstream::parse("http://[::1]:5001").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 5001));
        assert!(StsUpstream::parse("http://127.8.9.10:1").is_ok());
        for bad in [
            "https://127.0.0.1:5000",
            "http://10.0.0.1:5000",
            "http://example.com:5000",
            "http://user:pw@127.0.0.1:5000",
            "http://127.0.0.1:5000/sts",
            "http://127.0.0.1:5000/?a=b",
            "http://127.0.0.1:5000/#x",
            "127.0.0.1:5000",
            "not a url",
        ] {
            assert!(StsUpstream::parse(bad).is_err(), "{bad}");
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn drops_only_unsigned_hop_by_hop_headers() {
        let h = headers(&[
            ("host", "127.0.0.1:1"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("x-amz-date", "20261127T220000Z"),
            ("te", "trailers"),
            ("authorization", "AWS4-HMAC-SHA256 Credential=A/20261127/us-east-1/sts/aws4_request, SignedHeaders=host;te;x-amz-date, Signature=00"),
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-multi", "a"),
            ("x-multi", "b"),
        ]);
        let keep = signed_header_names(&h);
        assert_eq!(keep, ["host", "te", "x-amz-date"]);
        let out = end_to_end(&h, &keep);
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(
            names,
            [
                "host",
                "x-amz-date",
                "te",
                "authorization",
                "content-type",
                "x-multi"
            ]
        );
        let multi: Vec<&HeaderValue> = out.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["a", "b"]);
        assert!(end_to_end(&h, &[]).get("te").is_none());
    }
}
