//! The model manifest: every tensor of a model (name, dtype, shape, length, leaf size, Merkle
//! root, optionally its 1 MiB region roots) under one HMAC, so a missing, extra, renamed,
//! reordered or altered tensor is caught. Canonical JSON; format: docs/manifest-format.md.
//!
//! The canonical form is what `json.dumps(m, sort_keys=True, separators=(",", ":"),
//! ensure_ascii=False)` writes: object keys sorted, no whitespace, integers only. A manifest is
//! accepted only in exactly that form (no re-formatting, no duplicate keys), which leaves no
//! room for two parsers to read one signed text two ways.

use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use super::key::SealKey;
use super::merkle::{Hash, TreeLayout, check_leaf_size};
use super::shard_id::check_shard_id;
use crate::error::{ErrorKind, Result, VramError};

pub const FORMAT: &str = "libvram-manifest";
pub const VERSION: u64 = 1;
/// Prefixed to the canonical body before the MAC: a manifest MAC can never be a record MAC.
const MAC_DOMAIN: &[u8] = b"libvram manifest v1\n";
/// Largest manifest accepted (a 1 TB model with region roots is about 70 MB).
pub const MAX_BYTES: usize = 256 << 20;
/// Most tensors in one manifest.
pub const MAX_TENSORS: usize = 1 << 20;
/// Highest tensor rank.
pub const MAX_RANK: usize = 8;

/// The safetensors dtypes and their element sizes in bytes (sub-byte types are not listed).
const DTYPES: [(&str, u64); 16] = [
    ("BOOL", 1),
    ("U8", 1),
    ("I8", 1),
    ("F8_E5M2", 1),
    ("F8_E4M3", 1),
    ("F8_E8M0", 1),
    ("I16", 2),
    ("U16", 2),
    ("F16", 2),
    ("BF16", 2),
    ("I32", 4),
    ("U32", 4),
    ("F32", 4),
    ("F64", 8),
    ("I64", 8),
    ("U64", 8),
];

/// The root of an empty tensor: RFC 9162's hash of the empty list, SHA-256 of no bytes.
pub fn empty_root() -> Hash {
    use sha2::Digest;
    sha2::Sha256::digest([]).into()
}

/// Element size of a safetensors dtype name.
pub fn dtype_size(dtype: &str) -> Option<u64> {
    DTYPES.iter().find(|(d, _)| *d == dtype).map(|(_, s)| *s)
}

/// One tensor of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub byte_len: u64,
    pub leaf_size: u32,
    pub root: Hash,
    /// One root per 1 MiB region (the shard's kept level), when recorded.
    pub regions: Option<Vec<Hash>>,
}

impl TensorEntry {
    /// Checks the entry's own rules: a valid name, a known dtype, a shape whose size matches
    /// the length, a valid leaf size, region roots that hash to the root.
    pub fn check(&self) -> Result<()> {
        check_shard_id(self.name.as_bytes())
            .map_err(|e| VramError::invalid("tensor name", e.message))?;
        let size = dtype_size(&self.dtype).ok_or_else(|| {
            VramError::invalid(
                "dtype",
                format!(
                    "'{}' of '{}' is not a safetensors dtype",
                    self.dtype, self.name
                ),
            )
        })?;
        if self.shape.len() > MAX_RANK {
            return Err(VramError::invalid(
                "shape",
                format!(
                    "'{}' has rank {}; at most {MAX_RANK}",
                    self.name,
                    self.shape.len()
                ),
            ));
        }
        let elements = self
            .shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(size));
        if elements != Some(self.byte_len) {
            return Err(VramError::invalid(
                "shape",
                format!(
                    "'{}': shape {:?} of {} does not make {} bytes",
                    self.name, self.shape, self.dtype, self.byte_len
                ),
            ));
        }
        check_leaf_size(self.leaf_size)
            .map_err(|e| VramError::invalid("leaf_size", format!("'{}': {e}", self.name)))?;
        if self.byte_len == 0 {
            // An empty tensor: legal, recorded, with the root of no bytes and no regions.
            if !bool::from(self.root.ct_eq(&empty_root()))
                || self.regions.as_ref().is_some_and(|r| !r.is_empty())
            {
                return Err(VramError::invalid(
                    "root",
                    format!(
                        "'{}' is empty: its root is SHA-256 of no bytes, and it has no regions",
                        self.name
                    ),
                ));
            }
            return Ok(());
        }
        if let Some(regions) = &self.regions {
            let layout = TreeLayout::new(self.byte_len, self.leaf_size);
            if regions.len() as u64 != layout.regions() {
                return Err(VramError::invalid(
                    "regions",
                    format!(
                        "'{}' lists {} region roots, its length needs {}",
                        self.name,
                        regions.len(),
                        layout.regions()
                    ),
                ));
            }
            let root = super::merkle::root_from_level(regions).unwrap_or([0; 32]);
            if !bool::from(root.ct_eq(&self.root)) {
                return Err(VramError::invalid(
                    "regions",
                    format!("'{}': the region roots do not hash to the root", self.name),
                ));
            }
        }
        Ok(())
    }

    /// ", first in the 1 MiB region at byte offset N" for messages, when this entry records
    /// region roots and one differs from `level` (regions of `region_size` bytes); else "".
    pub fn differing_region_text(&self, level: &[Hash], region_size: u64) -> String {
        self.first_differing_region(level)
            .map(|r| {
                format!(
                    ", first in the 1 MiB region at byte offset {}",
                    r * region_size
                )
            })
            .unwrap_or_default()
    }

    /// Index of the first region whose root differs from `level` (region roots of other
    /// bytes of the same layout), when this entry records region roots.
    pub fn first_differing_region(&self, level: &[Hash]) -> Option<u64> {
        let regions = self.regions.as_ref()?;
        regions
            .iter()
            .zip(level)
            .position(|(a, b)| !bool::from(a.ct_eq(b)))
            .map(|i| i as u64)
    }
}

/// A model manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub model: String,
    pub key_id: [u8; 16],
    pub tensors: Vec<TensorEntry>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str, what: &str) -> Result<[u8; N]> {
    let bad = || {
        VramError::new(
            ErrorKind::BadSeal,
            format!("manifest: {what} is not {N} bytes of lowercase hex"),
        )
    };
    if s.len() != 2 * N || !s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(bad());
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

impl Manifest {
    /// A manifest of `tensors`, checked: a valid model name, at most [`MAX_TENSORS`] tensors,
    /// unique names, each entry valid.
    pub fn new(model: &str, key_id: [u8; 16], tensors: Vec<TensorEntry>) -> Result<Self> {
        check_shard_id(model.as_bytes())
            .map_err(|e| VramError::invalid("model_name", e.message))?;
        if tensors.len() > MAX_TENSORS {
            return Err(VramError::invalid(
                "tensors",
                format!("{} tensors; at most {MAX_TENSORS}", tensors.len()),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for t in &tensors {
            t.check()?;
            if !names.insert(t.name.as_str()) {
                return Err(VramError::invalid(
                    "tensors",
                    format!("'{}' appears twice", t.name),
                ));
            }
        }
        Ok(Self {
            model: model.to_string(),
            key_id,
            tensors,
        })
    }

    /// The entry named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.iter().find(|t| t.name == name)
    }

    fn body(&self) -> Map<String, Value> {
        let tensors = self
            .tensors
            .iter()
            .map(|t| {
                let mut e = Map::new();
                e.insert("name".into(), t.name.clone().into());
                e.insert("dtype".into(), t.dtype.clone().into());
                e.insert("shape".into(), t.shape.clone().into());
                e.insert("byte_len".into(), t.byte_len.into());
                e.insert("leaf_size".into(), t.leaf_size.into());
                e.insert("root".into(), hex(&t.root).into());
                if let Some(r) = &t.regions {
                    e.insert(
                        "regions".into(),
                        r.iter()
                            .map(|h| Value::from(hex(h)))
                            .collect::<Vec<_>>()
                            .into(),
                    );
                }
                Value::Object(e)
            })
            .collect::<Vec<_>>();
        let mut m = Map::new();
        m.insert("format".into(), FORMAT.into());
        m.insert("version".into(), VERSION.into());
        m.insert("model".into(), self.model.clone().into());
        m.insert("key_id".into(), hex(&self.key_id).into());
        m.insert("tensors".into(), tensors.into());
        m
    }

    fn mac(key: &SealKey, body: &Map<String, Value>) -> Result<[u8; 32]> {
        let canonical = serde_json::to_vec(body)
            .map_err(|e| VramError::out_of_memory(format!("manifest: {e}")))?;
        let mut message = Vec::new();
        message
            .try_reserve_exact(MAC_DOMAIN.len() + canonical.len())
            .map_err(|_| VramError::out_of_memory("manifest: host memory exhausted"))?;
        message.extend_from_slice(MAC_DOMAIN);
        message.extend_from_slice(&canonical);
        Ok(key.mac(&message))
    }

    /// The canonical bytes with their MAC under `key`.
    pub fn encode(&self, key: &SealKey) -> Result<Vec<u8>> {
        let mut m = self.body();
        let tag = Self::mac(key, &m)?;
        m.insert("mac".into(), hex(&tag).into());
        serde_json::to_vec(&m).map_err(|e| VramError::out_of_memory(format!("manifest: {e}")))
    }

    /// Parses and authenticates a manifest: `BadSeal` unless it is canonical, of this key and
    /// its MAC matches; `Unsupported` for another format version.
    pub fn decode(bytes: &[u8], key: &SealKey) -> Result<Self> {
        let bad = |why: String| VramError::new(ErrorKind::BadSeal, format!("manifest: {why}"));
        let mut m = parse_object(bytes)?;
        match m.get("version").and_then(Value::as_u64) {
            Some(VERSION) => {}
            other => {
                return Err(VramError::new(
                    ErrorKind::Unsupported,
                    format!(
                        "manifest: format version {} is not supported (this libvram reads version {VERSION})",
                        other.map_or_else(|| "(missing)".to_string(), |v| v.to_string())
                    ),
                ));
            }
        }
        let canonical = serde_json::to_vec(&m).map_err(|e| bad(e.to_string()))?;
        if canonical != bytes {
            return Err(bad(
                "is not in canonical form (re-formatted, or a key appears twice)".into(),
            ));
        }
        let key_id = unhex::<16>(
            m.get("key_id").and_then(Value::as_str).unwrap_or(""),
            "key_id",
        )?;
        if !bool::from(key_id.ct_eq(&key.key_id())) {
            return Err(bad(
                "was made under another key (key identifier differs)".into()
            ));
        }
        let tag = unhex::<32>(
            m.remove("mac")
                .as_ref()
                .and_then(Value::as_str)
                .unwrap_or(""),
            "mac",
        )?;
        if !bool::from(Self::mac(key, &m)?.ct_eq(&tag)) {
            return Err(bad(
                "MAC does not match: the manifest was altered or forged".into(),
            ));
        }
        // Authentic: now read the fields, strictly.
        Self::from_body(&m, key_id).map_err(|e| bad(e.message))
    }

    /// Parses a manifest **without authenticating it** (for display by tools that do not hold
    /// the key): nothing it says can be trusted.
    pub fn peek(bytes: &[u8]) -> Result<Self> {
        let bad = |why: String| VramError::new(ErrorKind::BadSeal, format!("manifest: {why}"));
        let mut m = parse_object(bytes)?;
        m.remove("mac");
        let key_id = unhex::<16>(
            m.get("key_id").and_then(Value::as_str).unwrap_or(""),
            "key_id",
        )?;
        Self::from_body(&m, key_id).map_err(|e| bad(e.message))
    }

    fn from_body(m: &Map<String, Value>, key_id: [u8; 16]) -> Result<Self> {
        let known = ["format", "version", "model", "key_id", "tensors"];
        if let Some(k) = m.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(VramError::invalid(
                "manifest",
                format!("unknown field '{k}'"),
            ));
        }
        let model = m
            .get("model")
            .and_then(Value::as_str)
            .ok_or_else(|| VramError::invalid("manifest", "model is missing"))?;
        let list = m
            .get("tensors")
            .and_then(Value::as_array)
            .ok_or_else(|| VramError::invalid("manifest", "tensors is missing"))?;
        let tensors = list
            .iter()
            .enumerate()
            .map(|(i, v)| entry(i, v))
            .collect::<Result<Vec<_>>>()?;
        Self::new(model, key_id, tensors)
    }
}

/// The JSON object of a manifest of at most [`MAX_BYTES`] whose `format` is ours (`BadSeal`
/// otherwise: nothing about it can be trusted).
fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>> {
    let bad = |why: String| VramError::new(ErrorKind::BadSeal, format!("manifest: {why}"));
    if bytes.len() > MAX_BYTES {
        return Err(VramError::invalid(
            "manifest",
            format!("{} bytes; at most {MAX_BYTES}", bytes.len()),
        ));
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("is not JSON ({e})")))?;
    let Value::Object(m) = value else {
        return Err(bad("is not a JSON object".into()));
    };
    if m.get("format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(bad(format!("is not a {FORMAT} document")));
    }
    Ok(m)
}

fn entry(i: usize, v: &Value) -> Result<TensorEntry> {
    let err = |why: &str| VramError::invalid("manifest", format!("tensors[{i}]: {why}"));
    let e = v.as_object().ok_or_else(|| err("is not an object"))?;
    let known = [
        "name",
        "dtype",
        "shape",
        "byte_len",
        "leaf_size",
        "root",
        "regions",
    ];
    if let Some(k) = e.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(err(&format!("unknown field '{k}'")));
    }
    let text = |k: &str| {
        e.get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| err(&format!("{k} is missing")))
    };
    let int = |k: &str| {
        e.get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| err(&format!("{k} is missing")))
    };
    let shape = e
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| err("shape is missing"))?
        .iter()
        .map(|d| d.as_u64().ok_or_else(|| err("shape holds a non-integer")))
        .collect::<Result<Vec<_>>>()?;
    let regions = match e.get("regions") {
        None => None,
        Some(r) => Some(
            r.as_array()
                .ok_or_else(|| err("regions is not a list"))?
                .iter()
                .map(|h| unhex::<32>(h.as_str().unwrap_or(""), "a region root"))
                .collect::<Result<Vec<_>>>()?,
        ),
    };
    Ok(TensorEntry {
        name: text("name")?.to_string(),
        dtype: text("dtype")?.to_string(),
        shape,
        byte_len: int("byte_len")?,
        leaf_size: u32::try_from(int("leaf_size")?).map_err(|_| err("leaf_size is too large"))?,
        root: unhex::<32>(text("root")?, "root")?,
        regions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SealKey {
        SealKey::derive(b"an example seal secret, 32 bytes").unwrap()
    }

    fn abc() -> TensorEntry {
        // SHA-256(0x00 ‖ "abc"): the one-leaf root of docs/seal-format.md's example.
        let root = unhex::<32>(
            "609f6e36d2405585188d5cfd761f407c7cc46a7d3f314c88270469dde315fcd1",
            "r",
        )
        .unwrap();
        TensorEntry {
            name: "w".into(),
            dtype: "U8".into(),
            shape: vec![3],
            byte_len: 3,
            leaf_size: 4096,
            root,
            regions: Some(vec![root]),
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let k = key();
        let m = Manifest::new("tiny", k.key_id(), vec![abc()]).unwrap();
        let bytes = m.encode(&k).unwrap();
        assert_eq!(Manifest::decode(&bytes, &k).unwrap(), m);
        // Every single-byte change is refused.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(Manifest::decode(&b, &k).is_err(), "byte {i}");
        }
        // Re-formatted (a space) and another key.
        let spaced = String::from_utf8(bytes.clone())
            .unwrap()
            .replacen(",", ", ", 1);
        assert_eq!(
            Manifest::decode(spaced.as_bytes(), &k).unwrap_err().kind,
            ErrorKind::BadSeal
        );
        let other = SealKey::derive(&[7u8; 32]).unwrap();
        assert_eq!(
            Manifest::decode(&bytes, &other).unwrap_err().kind,
            ErrorKind::BadSeal
        );
        // Another version is refused as unsupported, not as a forgery.
        let v2 = String::from_utf8(bytes)
            .unwrap()
            .replace("\"version\":1", "\"version\":2");
        assert_eq!(
            Manifest::decode(v2.as_bytes(), &k).unwrap_err().kind,
            ErrorKind::Unsupported
        );
    }

    /// The worked example of docs/manifest-format.md, byte for byte.
    #[test]
    fn documented_example() {
        const EXAMPLE: &str = concat!(
            r#"{"format":"libvram-manifest","key_id":"f70289e2f6150e1620feae0014697194","#,
            r#""mac":"34c72518be584773073d2c98e4615b1ff6e1cb8da7fcab683d24860093de775c","#,
            r#""model":"tiny","tensors":[{"byte_len":3,"dtype":"U8","leaf_size":4096,"#,
            r#""name":"w","regions":["609f6e36d2405585188d5cfd761f407c7cc46a7d3f314c88270469dde315fcd1"],"#,
            r#""root":"609f6e36d2405585188d5cfd761f407c7cc46a7d3f314c88270469dde315fcd1","#,
            r#""shape":[3]}],"version":1}"#
        );
        let k = key();
        let m = Manifest::new("tiny", k.key_id(), vec![abc()]).unwrap();
        assert_eq!(String::from_utf8(m.encode(&k).unwrap()).unwrap(), EXAMPLE);
        let doc = include_str!("../../docs/manifest-format.md");
        assert!(
            doc.contains(EXAMPLE),
            "docs/manifest-format.md shows other bytes"
        );
    }

    #[test]
    fn entries_are_checked() {
        let mut t = abc();
        t.shape = vec![4];
        assert!(Manifest::new("m", [0; 16], vec![t]).is_err());
        let mut t = abc();
        t.dtype = "F17".into();
        assert!(Manifest::new("m", [0; 16], vec![t]).is_err());
        let mut t = abc();
        t.regions = Some(vec![[1; 32]]);
        assert!(Manifest::new("m", [0; 16], vec![t]).is_err());
        assert!(Manifest::new("m", [0; 16], vec![abc(), abc()]).is_err());
    }
}
