//! The OpenSSF model-signing bridge: the per-file SHA-256 digests of a model-signing manifest
//! (the in-toto statement inside a bundle whose signature the model-signing tool has
//! verified), checked in the same read that loads and seals the files.
//!
//! What is checked: every safetensors file libvram loads must be listed in the statement's
//! `predicate.resources` with algorithm `sha256` (the `files` serialization), and its bytes must
//! hash to that digest. What is not: the statement's signature, the signer's identity and the
//! transparency log (the model-signing tool and sigstore verify those before the payload is
//! given here); files the statement lists that libvram does not load (configs, tokenizers);
//! the `shards` serialization (`sha256-sharded-*`), refused as unsupported.

use std::collections::HashMap;

use serde_json::Value;

use crate::error::{ErrorKind, Result, VramError};

pub const PREDICATE_TYPES: [&str; 2] = [
    "https://model_signing/signature/v1.0",
    "https://model_signing/Digests/v0.1",
];

/// The per-file digests of a model-signing statement, by path relative to the model's
/// directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigests {
    pub files: HashMap<String, [u8; 32]>,
}

fn bad(why: impl std::fmt::Display) -> VramError {
    VramError::invalid("model_signing", why)
}

fn digest(s: &str, name: &str) -> Result<[u8; 32]> {
    if s.len() != 64 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad(format!("the digest of '{name}' is not 64 hex digits")));
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad("bad hex"))?;
    }
    Ok(out)
}

/// Standard base64 (with padding), for the DSSE payload of a sigstore bundle.
fn base64(s: &str) -> Result<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        })
    };
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c).ok_or_else(|| bad("the DSSE payload is not base64"))? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Ok(out)
}

impl FileDigests {
    /// Reads an in-toto statement, or a sigstore bundle / DSSE envelope holding one (whose
    /// signature the caller has verified).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > 64 << 20 {
            return Err(bad("larger than 64 MiB"));
        }
        let mut v: Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        // A bundle holds a DSSE envelope; an envelope holds the statement, base64-encoded.
        if let Some(env) = v.get("dsseEnvelope").cloned() {
            v = env;
        }
        if let Some(payload) = v.get("payload").and_then(Value::as_str) {
            let raw = base64(payload)?;
            v = serde_json::from_slice(&raw)
                .map_err(|e| bad(format!("the DSSE payload is not JSON: {e}")))?;
        }
        let ptype = v.get("predicateType").and_then(Value::as_str).unwrap_or("");
        if !PREDICATE_TYPES.contains(&ptype) {
            return Err(bad(format!(
                "predicateType '{ptype}' is not a model-signing one"
            )));
        }
        let resources = v
            .pointer("/predicate/resources")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no predicate.resources list"))?;
        let mut files = HashMap::new();
        for r in resources {
            let name = r
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("a resource has no name"))?;
            let algorithm = r.get("algorithm").and_then(Value::as_str).unwrap_or("");
            if algorithm != "sha256" {
                return Err(VramError::new(
                    ErrorKind::Unsupported,
                    format!(
                        "model_signing: resource '{name}' uses algorithm '{algorithm}'; libvram checks 'sha256' (the files serialization)"
                    ),
                ));
            }
            let d = digest(r.get("digest").and_then(Value::as_str).unwrap_or(""), name)?;
            if files.insert(name.to_string(), d).is_some() {
                return Err(bad(format!("resource '{name}' is listed twice")));
            }
        }
        Ok(Self { files })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_envelopes_and_refusals() {
        let statement = r#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"m","digest":{"sha256":"00"}}],"predicateType":"https://model_signing/signature/v1.0","predicate":{"serialization":{"method":"files","hash_type":"sha256"},"resources":[{"algorithm":"sha256","digest":"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad","name":"model.safetensors"}]}}"#;
        let d = FileDigests::parse(statement.as_bytes()).unwrap();
        assert_eq!(d.files.len(), 1);
        assert_eq!(d.files["model.safetensors"][0], 0xba);
        // The same statement inside a bundle's DSSE envelope.
        let b64: String = {
            const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            statement
                .as_bytes()
                .chunks(3)
                .flat_map(|c| {
                    let n = (u32::from(c[0]) << 16)
                        | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                        | u32::from(*c.get(2).unwrap_or(&0));
                    (0..4).map(move |i| {
                        if i <= c.len() {
                            T[(n >> (18 - 6 * i) & 63) as usize] as char
                        } else {
                            '='
                        }
                    })
                })
                .collect()
        };
        let bundle = format!(
            r#"{{"mediaType":"x","dsseEnvelope":{{"payload":"{b64}","payloadType":"application/vnd.in-toto+json","signatures":[]}}}}"#
        );
        assert_eq!(FileDigests::parse(bundle.as_bytes()).unwrap(), d);
        let sharded = statement.replace(
            "\"algorithm\":\"sha256\"",
            "\"algorithm\":\"sha256-sharded-8\"",
        );
        assert_eq!(
            FileDigests::parse(sharded.as_bytes()).unwrap_err().kind,
            ErrorKind::Unsupported
        );
        let other = statement.replace("model_signing/signature", "example.com/other");
        assert!(FileDigests::parse(other.as_bytes()).is_err());
    }
}
