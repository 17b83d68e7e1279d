//! One HTTP call a credentials source makes through an Envoy cluster, and how a failed fetch is
//! explained.

use std::fmt;

/// A call for `dispatch_http_call`: the cluster, the headers (pseudo-headers `:method`, `:path`,
/// `:authority` first, names lowercase) and the body.
#[derive(Clone, PartialEq, Eq)]
pub struct Call {
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Call {
    /// A call without a body.
    pub fn new(cluster: &str, method: &str, authority: &str, path: &str) -> Call {
        Call {
            cluster: cluster.to_owned(),
            headers: vec![
                (":method".to_owned(), method.to_owned()),
                (":path".to_owned(), path.to_owned()),
                (":authority".to_owned(), authority.to_owned()),
            ],
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Call {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The value of header `name` (tests and logs).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Only the method, path and cluster: headers may carry a token or a signature.
impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} via cluster {:?}",
            self.get(":method").unwrap_or("?"),
            self.get(":path").unwrap_or("?"),
            self.cluster
        )
    }
}

/// Why a fetch gave no credentials: the source that failed, and what went wrong (never a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    pub source: &'static str,
    pub message: String,
}

impl FetchError {
    pub fn new(source: &'static str, message: impl Into<String>) -> FetchError {
        FetchError {
            source,
            message: message.into(),
        }
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.message)
    }
}

/// At most this much of an answer body goes into a log line, as text.
const SHOWN_BYTES: usize = 200;

/// A short, printable excerpt of an answer body for a log line: credential answers are only ever
/// shown when they are *not* credentials (an error page), and cut short.
pub fn excerpt(body: &[u8]) -> String {
    let cut = body.get(..SHOWN_BYTES).unwrap_or(body);
    let text: String = String::from_utf8_lossy(cut)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if body.len() > SHOWN_BYTES {
        format!("{}… ({} bytes)", text.trim(), body.len())
    } else {
        text.trim().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_header() {
        let c = Call::new("imds", "GET", "169.254.169.254", "/latest/x")
            .header("x-aws-ec2-metadata-token", "secret-token");
        let shown = format!("{c:?}");
        assert_eq!(shown, "GET /latest/x via cluster \"imds\"");
        assert_eq!(c.get("x-aws-ec2-metadata-token"), Some("secret-token"));
        assert_eq!(c.get("absent"), None);
    }

    #[test]
    fn excerpts_are_short_and_printable() {
        assert_eq!(
            excerpt(b" upstream\nconnect error "),
            "upstream connect error"
        );
        let long = vec![b'a'; 1000];
        let e = excerpt(&long);
        assert!(e.ends_with("… (1000 bytes)"), "{e}");
        assert_eq!(e.chars().filter(|c| *c == 'a').count(), SHOWN_BYTES);
        assert_eq!(excerpt(&[0xff, b'x']), "\u{fffd}x");
        // Exactly the limit is shown whole.
        assert_eq!(excerpt(&[b'b'; SHOWN_BYTES]), "b".repeat(SHOWN_BYTES));
    }

    #[test]
    fn errors_name_their_source() {
        let e = FetchError::new("imds", "answered 401");
        assert_eq!(e.to_string(), "imds: answered 401");
    }
}
