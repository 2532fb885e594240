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
    if let Some(c) = id.chars().find(|&c| c.is_control()) {
        return Err(VramError::invalid(
            "shard_id",
            format!("contains the control character U+{:04X}", c as u32),
        ));
    }
    if let Some(c) = id.chars().find(|&c| is_invisible(c)) {
        return Err(VramError::invalid(
            "shard_id",
            format!(
                "contains U+{:04X}, an invisible, bidirectional or separator character (it could disguise the id in logs)",
                c as u32
            ),
        ));
    }
    if id.starts_with('/') {
        return Err(bad("starts with '/'"));
    }
    if id.split('/').any(|segment| segment == "..") {
        return Err(bad("contains a '..' path segment"));
    }
    Ok(id)
}

/// Characters that render as nothing, reorder the text around them, or break a line: Unicode
/// format characters (category Cf: bidirectional controls, zero-width joiners and spaces, the
/// byte-order mark, tags), line and paragraph separators, whitespace other than the ASCII
/// space, variation selectors and the invisible fillers. A shard id holding one could show in
/// a log line as a different id.
fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180E | 0x3164
        | 0xFEFF | 0xFFA0 | 0x110BD | 0x110CD | 0x06DD | 0x070F | 0x08E2
        | 0x0600..=0x0605 | 0x0890..=0x0891 | 0x180B..=0x180F | 0x200B..=0x200F
        | 0x2028..=0x202F | 0x205F..=0x206F | 0xFE00..=0xFE0F | 0xFFF9..=0xFFFB
        | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0000..=0xE0FFF)
        || (c.is_whitespace() && c != ' ')
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
        // Bidirectional overrides, zero-width characters, separators and tags.
        for id in [
            "a\u{202E}b",
            "a\u{2066}b",
            "a\u{200B}b",
            "a\u{200D}b",
            "\u{FEFF}a",
            "a\u{2028}b",
            "a\u{00A0}b",
            "a\u{3000}b",
            "a\u{E0041}",
            "a\u{FE0F}",
            "a\u{061C}b",
        ] {
            assert!(check_shard_id(id.as_bytes()).is_err(), "{id:?}");
        }
    }
}
