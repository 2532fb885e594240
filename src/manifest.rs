//! Manifests of live shards: one made from a model's sealed shards, and a model's live shards
//! checked against one in a single batched verify.

use std::collections::HashMap;

use subtle::ConstantTimeEq;

use crate::context::{Context, Outcome};
use crate::error::{ErrorKind, Result, VramError};
use crate::events::{self, Level, names};
use crate::seal::manifest::{Manifest, TensorEntry, dtype_size};
use crate::shard::Shard;

/// What a tensor is, beyond its bytes: a safetensors dtype and a shape.
#[derive(Debug, Clone, Copy)]
pub struct TensorKind<'a> {
    pub dtype: &'a str,
    pub shape: &'a [u64],
}

/// A manifest of `shards` (in that order) under `ctx`'s key. Without `kinds`, every tensor is
/// recorded as raw bytes (`U8`, shape `[len]`). `region_roots` records each shard's 1 MiB
/// region roots, so that a damaged file can be located offline.
pub fn from_shards(
    ctx: &Context,
    model: &str,
    shards: &[&Shard],
    kinds: Option<&[TensorKind<'_>]>,
    region_roots: bool,
) -> Result<Manifest> {
    if let Some(k) = kinds {
        if k.len() != shards.len() {
            return Err(VramError::invalid(
                "opts",
                "one dtype and shape per shard are needed",
            ));
        }
    }
    let mut tensors = crate::fallible::try_with_capacity(shards.len(), "manifest")?;
    for (i, s) in shards.iter().enumerate() {
        let (dtype, shape) = match kinds.and_then(|k| k.get(i)) {
            Some(k) => (k.dtype.to_string(), k.shape.to_vec()),
            None => ("U8".to_string(), vec![s.len()]),
        };
        if dtype_size(&dtype).is_none() {
            return Err(VramError::invalid(
                "dtypes",
                format!("[{i}] '{dtype}' is not a safetensors dtype"),
            ));
        }
        tensors.push(TensorEntry {
            name: s.id().to_string(),
            dtype,
            shape,
            byte_len: s.len(),
            leaf_size: s.layout().leaf_size,
            root: s.root(),
            regions: region_roots.then(|| s.level.clone()),
        });
    }
    let m = Manifest::new(model, ctx.key_id(), tensors)?;
    // Every shard must be one this key sealed: a manifest vouches for nothing else.
    for s in shards {
        if !ctx.seal_authenticates(s) {
            return Err(VramError::bad_seal(format!(
                "shard '{}' was not sealed under this context's key",
                s.id()
            )));
        }
    }
    Ok(m)
}

/// How one manifest tensor compares with the live shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A live shard of that name holds exactly the manifest's bytes, and they verify.
    Intact,
    /// No live shard has that name.
    Missing,
    /// The live shard of that name was sealed over other bytes (length, leaf size or root).
    Different,
    /// The live shard matches the manifest, but its bytes no longer match its seal.
    Damaged,
    /// The live shard's own seal does not authenticate under the context's key.
    BadSeal,
}

/// The check of one manifest tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorCheck {
    pub verdict: Verdict,
    /// Index into the shards given, when one has the tensor's name.
    pub shard: Option<usize>,
    pub damaged_regions: u64,
    /// Byte offset of the first damaged (or, for `Different`, first differing, when the
    /// manifest has region roots) region; `u64::MAX` when none is known.
    pub first_damaged_offset: u64,
}

/// The check of a whole model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelCheck {
    /// One per manifest tensor, in manifest order.
    pub tensors: Vec<TensorCheck>,
    /// Indices of the shards whose names the manifest does not list.
    pub extra: Vec<usize>,
}

impl ModelCheck {
    pub fn count(&self, v: Verdict) -> usize {
        self.tensors.iter().filter(|t| t.verdict == v).count()
    }
}

/// Checks live `shards` against `m`: names matched, each matched shard's seal compared with
/// its entry, and all matched shards re-hashed in one batched verify.
pub fn check(ctx: &Context, m: &Manifest, shards: &[&Shard]) -> Result<ModelCheck> {
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, s) in shards.iter().enumerate() {
        if by_name.insert(s.id(), i).is_some() {
            return Err(VramError::invalid(
                "shards",
                format!("two shards are named '{}'", s.id()),
            ));
        }
    }
    let matched: Vec<Option<usize>> = m
        .tensors
        .iter()
        .map(|t| by_name.get(t.name.as_str()).copied())
        .collect();
    let live: Vec<&Shard> = matched.iter().flatten().map(|&i| shards[i]).collect();
    let reports = ctx.verify_many(&live, None)?;
    let mut reports = reports.into_iter();
    let mut tensors = Vec::with_capacity(m.tensors.len());
    for (t, &idx) in m.tensors.iter().zip(&matched) {
        if t.byte_len == 0 && idx.is_none() {
            // Empty tensors have no shard (nothing to seal): recorded, always intact.
            tensors.push(TensorCheck {
                verdict: Verdict::Intact,
                shard: None,
                damaged_regions: 0,
                first_damaged_offset: u64::MAX,
            });
            continue;
        }
        let Some(i) = idx else {
            events::emit(
                Level::Error,
                names::VERIFY_FAILED,
                &format!("model '{}': tensor '{}' is missing", m.model, t.name),
            );
            tensors.push(TensorCheck {
                verdict: Verdict::Missing,
                shard: None,
                damaged_regions: 0,
                first_damaged_offset: u64::MAX,
            });
            continue;
        };
        let s = shards[i];
        let r = reports
            .next()
            .ok_or_else(|| VramError::new(ErrorKind::Device, "verify returned too few reports"))?;
        let same = s.len() == t.byte_len
            && s.layout().leaf_size == t.leaf_size
            && bool::from(s.root().ct_eq(&t.root));
        let check = if !same {
            let first = t
                .first_differing_region(&s.level)
                .filter(|_| s.len() == t.byte_len && s.layout().leaf_size == t.leaf_size);
            events::emit(
                Level::Error,
                names::VERIFY_FAILED,
                &format!(
                    "model '{}': tensor '{}' was sealed over other bytes than the manifest's",
                    m.model, t.name
                ),
            );
            TensorCheck {
                verdict: Verdict::Different,
                shard: Some(i),
                damaged_regions: 0,
                first_damaged_offset: first.map_or(u64::MAX, |f| f * r.region_size),
            }
        } else {
            let verdict = match r.outcome {
                Outcome::Intact => Verdict::Intact,
                Outcome::Damaged => Verdict::Damaged,
                Outcome::BadSeal => Verdict::BadSeal,
            };
            TensorCheck {
                verdict,
                shard: Some(i),
                damaged_regions: r.damaged_regions,
                first_damaged_offset: r.first_damaged_offset,
            }
        };
        tensors.push(check);
    }
    let listed: std::collections::HashSet<&str> =
        m.tensors.iter().map(|t| t.name.as_str()).collect();
    let extra: Vec<usize> = shards
        .iter()
        .enumerate()
        .filter(|(_, s)| !listed.contains(s.id()))
        .map(|(i, _)| i)
        .collect();
    for &i in &extra {
        events::emit(
            Level::Error,
            names::VERIFY_FAILED,
            &format!(
                "model '{}': shard '{}' is not in the manifest",
                m.model,
                shards[i].id()
            ),
        );
    }
    Ok(ModelCheck { tensors, extra })
}

/// Seals `data` as the manifest's tensor `name` (its leaf size) and keeps it only if it is
/// exactly the manifest's bytes; otherwise `Integrity` naming, when the manifest has region
/// roots, the first differing 1 MiB region.
pub fn seal_entry(ctx: &Context, m: &Manifest, name: &[u8], data: &[u8]) -> Result<Shard> {
    let name_str =
        std::str::from_utf8(name).map_err(|_| VramError::invalid("name", "is not UTF-8"))?;
    let t = m.tensor(name_str).ok_or_else(|| {
        VramError::invalid(
            "name",
            format!("'{name_str}' is not in model '{}'", m.model),
        )
    })?;
    if data.len() as u64 != t.byte_len {
        return Err(VramError::new(
            ErrorKind::Integrity,
            format!(
                "tensor '{name_str}': {} bytes given, the manifest says {}; nothing was kept",
                data.len(),
                t.byte_len
            ),
        ));
    }
    let shard = ctx.seal(name, data, Some(t.leaf_size))?;
    if bool::from(shard.root().ct_eq(&t.root)) {
        return Ok(shard);
    }
    let at = t.differing_region_text(&shard.level, shard.layout().region_size());
    let msg =
        format!("tensor '{name_str}': the bytes differ from the manifest's{at}; nothing was kept");
    events::emit(Level::Error, names::VERIFY_FAILED, &msg);
    Err(VramError::new(ErrorKind::Integrity, msg))
}
