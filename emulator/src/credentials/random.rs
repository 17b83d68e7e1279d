//! The random parts of an issued credential set and of an IMDSv2 session token, drawn from the
//! operating system's generator (through `uuid`'s version 4 UUIDs: their random bytes only).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

/// The characters of an access key id after its `ASIA` prefix.
const KEY_ID_ALPHABET: &[u8; 36] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/// The characters of a secret access key (AWS's are base64 characters).
const SECRET_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The length of a secret access key.
pub const SECRET_LEN: usize = 40;
/// How many random bytes a session token carries (base64: four characters per three bytes).
const TOKEN_RANDOM_BYTES: usize = 300;
/// The start every STS session token of this era has.
const TOKEN_PREFIX: &str = "IQoJb3JpZ2luX2Vj";
/// How many random bytes an IMDSv2 session token carries.
const IMDS_TOKEN_RANDOM_BYTES: usize = 42;

/// `n` random bytes. A version 4 UUID has 122 random bits: the version nibble (byte 6) and the
/// variant bits (byte 8) are fixed, so those two bytes are skipped.
pub fn bytes(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n.saturating_add(16));
    while out.len() < n {
        let uuid = *uuid::Uuid::new_v4().as_bytes();
        out.extend(
            uuid.iter()
                .enumerate()
                .filter(|(i, _)| *i != 6 && *i != 8)
                .map(|(_, b)| *b),
        );
    }
    out.truncate(n);
    out
}

/// `n` characters drawn uniformly from `alphabet` (rejection sampling keeps it uniform).
fn chars(alphabet: &[u8], n: usize) -> String {
    if alphabet.is_empty() {
        return String::new();
    }
    let len = alphabet.len().min(256);
    // The largest multiple of the alphabet's length that fits in a byte.
    let limit = 256 - 256 % len;
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in bytes(n.saturating_mul(2)) {
            let b = usize::from(b);
            if b < limit {
                if let Some(c) = alphabet.get(b % len) {
                    out.push(char::from(*c));
                }
            }
            if out.len() == n {
                break;
            }
        }
    }
    out
}

/// `ASIA` and 16 uppercase letters or digits, as AWS writes a temporary access key id.
pub fn access_key_id() -> String {
    format!("ASIA{}", chars(KEY_ID_ALPHABET, 16))
}

/// 40 base64 characters, as AWS writes a secret access key.
pub fn secret_access_key() -> String {
    chars(SECRET_ALPHABET, SECRET_LEN)
}

/// A session token: `IQoJb3JpZ2luX2Vj` and 400 base64 characters.
pub fn session_token() -> String {
    format!("{TOKEN_PREFIX}{}", BASE64.encode(bytes(TOKEN_RANDOM_BYTES)))
}

/// An IMDSv2 session token: `AQAEA` and 56 base64 characters.
pub fn imds_token() -> String {
    format!("AQAEA{}", BASE64.encode(bytes(IMDS_TOKEN_RANDOM_BYTES)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let akid = access_key_id();
        assert_eq!(akid.len(), 20);
        assert!(akid.starts_with("ASIA"));
        assert!(akid
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
        let secret = secret_access_key();
        assert_eq!(secret.len(), SECRET_LEN);
        assert!(secret.bytes().all(|b| SECRET_ALPHABET.contains(&b)));
        let token = session_token();
        assert!(token.starts_with(TOKEN_PREFIX) && token.len() > 400);
        let imds = imds_token();
        assert_eq!(imds.len(), 61);
        assert!(http::HeaderValue::from_str(&imds).is_ok());
        assert_eq!(bytes(5).len(), 5);
        assert_eq!(bytes(0).len(), 0);
    }

    #[test]
    fn draws_differ() {
        let keys: std::collections::HashSet<String> = (0..200).map(|_| access_key_id()).collect();
        assert_eq!(keys.len(), 200);
        assert_ne!(secret_access_key(), secret_access_key());
        assert_ne!(imds_token(), imds_token());
    }
}
