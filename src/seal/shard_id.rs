//! Shard identifiers: names such as `model.layers.0.mlp.up_proj.weight` or `net/3/weight`.
//!
//! They end up in logs, records and (in callers' systems) file paths, so the rules reject
//! anything that could be mistaken for a path escape or a terminal control sequence.

use crate::error::{Result, VramError};

pub const MAX_SHARD_ID_LEN: usize = 256;

/// Checks the rules on a shard id given as raw bytes (from C, without the NUL terminator).
pub fn check_shard_id(bytes: &[u8]) -> Result<&str> {
    let bad = |reason: &str| VramError::invalid("shard_id", reason);
    if bytes.is_empty() {
        return Err(bad("is empty"));
    }
    if bytes.len() > MAX_SHARD_ID_LEN {
        return Err(VramError::invalid(
            "shard_id",
            format!(
                "is {} bytes long; the limit is {MAX_SHARD_ID_LEN}",
                bytes.len()
            ),
        ));
    }
    let id = std::str::from_utf8(bytes).map_err(|_| bad("is not valid UTF-8"))?;
    if id.contains('\0') {
        return Err(bad("contains a NUL character"));
    }
    if id.chars().any(char::is_control) {
        return Err(bad("contains a control character"));
    }
    if id.starts_with('/') {
        return Err(bad("starts with '/'"));
    }
    if id.split('/').any(|segment| segment == "..") {
        return Err(bad("contains a '..' path segment"));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_tensor_names() {
        for id in [
            "model.layers.0.mlp.up_proj.weight",
            "a",
            "net/3/weight",
            "x..y",
            "..a",
            "embed_tokens.weight",
            "層.0",
        ] {
            assert!(check_shard_id(id.as_bytes()).is_ok(), "{id}");
        }
        assert!(check_shard_id(&[b'a'; 256]).is_ok());
    }

    #[test]
    fn rejects_bad_ids() {
        let long = [b'a'; 257];
        let cases: [&[u8]; 10] = [
            b"",
            &long,
            b"\xff\xfe",
            b"a\0b",
            b"a\nb",
            b"a\x1bb",
            b"/etc/passwd",
            b"../x",
            b"a/../b",
            b"a/..",
        ];
        for id in cases {
            assert!(check_shard_id(id).is_err(), "{id:?}");
        }
    }
}
