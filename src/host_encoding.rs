//! The proxy-wasm ABI's encodings: header maps and property paths as the host passes them.
//!
//! A header map is the pair count, each pair's name and value sizes (u32, little-endian), then
//! each name and value followed by a NUL byte. Names and values are bytes: Envoy passes on
//! header values that are not UTF-8 from any client, so nothing here assumes text.

/// Header names and values as bytes, in the map's order.
pub type HeaderPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// A header map for the host (e.g. a local reply's headers).
pub fn encode_pairs(pairs: &[(&str, &[u8])]) -> Vec<u8> {
    let data: usize = pairs.iter().map(|(n, v)| n.len() + v.len() + 2).sum();
    let mut out = Vec::with_capacity(4 + pairs.len() * 8 + data);
    out.extend_from_slice(&u32_len(pairs.len()).to_le_bytes());
    for (name, value) in pairs {
        out.extend_from_slice(&u32_len(name.len()).to_le_bytes());
        out.extend_from_slice(&u32_len(value.len()).to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

fn u32_len(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A header map from the host; `None` if it is malformed (sizes past its end).
pub fn decode_pairs(bytes: &[u8]) -> Option<HeaderPairs> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(b)).ok()
    };
    let count = word(0)?;
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    if data > bytes.len() {
        return None; // Not even room for the sizes: no allocation for a bogus count.
    }
    let mut out = Vec::with_capacity(count);
    for n in 0..count {
        let sizes = 4 + n * 8;
        let (name_len, value_len) = (word(sizes)?, word(sizes + 4)?);
        let name = bytes.get(data..data.checked_add(name_len)?)?.to_vec();
        data = data.checked_add(name_len)?.checked_add(1)?;
        let value = bytes.get(data..data.checked_add(value_len)?)?.to_vec();
        data = data.checked_add(value_len)?.checked_add(1)?;
        out.push((name, value));
    }
    Some(out)
}

/// A property path: its parts separated by NUL bytes.
pub fn encode_path(path: &[&str]) -> Vec<u8> {
    path.join("\0").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_maps_round_trip_any_bytes() {
        let value: &[u8] = b"caf\xe9\x00\xff";
        let encoded = encode_pairs(&[(":path", b"/Patient/x"), ("x-test", value), ("e", b"")]);
        let decoded = decode_pairs(&encoded).unwrap();
        assert_eq!(
            decoded,
            vec![
                (b":path".to_vec(), b"/Patient/x".to_vec()),
                (b"x-test".to_vec(), value.to_vec()),
                (b"e".to_vec(), Vec::new()),
            ]
        );
        // The layout, byte for byte: count, sizes, then NUL-terminated names and values; built
        // in one allocation of exactly that size.
        let two = encode_pairs(&[("ab", b"cde"), ("xyz", b"")]);
        assert_eq!(
            two,
            b"\x02\0\0\0\x02\0\0\0\x03\0\0\0\x03\0\0\0\0\0\0\0ab\0cde\0xyz\0\0"
        );
        assert_eq!(two.capacity(), two.len());
        assert_eq!(decode_pairs(b""), Some(Vec::new()));
        assert_eq!(decode_pairs(&encode_pairs(&[])), Some(Vec::new()));
    }

    #[test]
    fn malformed_maps_are_refused_not_trusted() {
        let good = encode_pairs(&[("a", b"bc")]);
        for cut in 1..good.len() - 1 {
            assert_eq!(decode_pairs(&good[..cut]), None, "cut at {cut}");
        }
        // A count or a size far past the end.
        assert_eq!(decode_pairs(&u32::MAX.to_le_bytes()), None);
        let mut huge = good.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_pairs(&huge), None);
    }

    #[test]
    fn paths_are_nul_separated() {
        assert_eq!(encode_path(&["connection", "mtls"]), b"connection\0mtls");
        assert_eq!(encode_path(&["relay_path"]), b"relay_path");
    }
}
