//! Loading a model from safetensors files into a context's backend, sealing every tensor under
//! its name: one `.safetensors` file, a sharded checkpoint through its
//! `model.safetensors.index.json`, or a directory holding either.
//!
//! Headers are parsed by the `safetensors` crate (which checks the JSON, the dtypes, that
//! offsets are contiguous and agree with shapes), plus the rules it leaves out: no duplicate
//! names, data that ends exactly where the file does, regular files only, index entries that
//! name plain files beside the index and agree with their files.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use subtle::ConstantTimeEq;

use crate::backend::{Source, Watch};
use crate::context::{Context, SealItem};
use crate::error::{ErrorKind, Result, VramError};
use crate::fallible::try_vec;
use crate::model_signing::FileDigests;
use crate::seal::manifest::{Manifest, TensorEntry, dtype_size, empty_root};
use crate::seal::merkle::{Hash, TreeLayout, root_from_level};
use crate::shard::Shard;

/// Largest header read (the safetensors crate's own limit).
const MAX_HEADER: u64 = 100_000_000;
/// Largest index file read.
const MAX_INDEX: u64 = 64 << 20;

/// One tensor of a loaded model.
pub struct LoadedTensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub byte_len: u64,
    /// `None` for an empty (zero-element) tensor: nothing to seal.
    pub shard: Option<Arc<Shard>>,
}

/// A model loaded and sealed from safetensors files, with its manifest.
pub struct LoadedModel {
    pub tensors: Vec<LoadedTensor>,
    pub manifest: Manifest,
}

/// What the caller wants while loading.
pub struct LoadOptions<'a> {
    /// The model's name in the manifest (default: the file's or directory's stem).
    pub model_name: Option<&'a str>,
    /// Fail fast unless every tensor is exactly this manifest's (and it lists no other).
    pub expected: Option<&'a Manifest>,
    /// Record region roots in the model's manifest.
    pub region_roots: bool,
    /// Told (bytes done, bytes total) after each tensor; `false` cancels the load.
    pub progress: Option<&'a mut dyn FnMut(u64, u64) -> bool>,
    /// Check every file against its SHA-256 in a model-signing statement, in the same read.
    pub model_signing: Option<&'a FileDigests>,
}

fn bad(reason: impl std::fmt::Display) -> VramError {
    VramError::invalid("path", reason)
}

/// The whole of a regular file of at most `max` bytes (a FIFO or a device is refused without
/// blocking on it; a file that grows while read never past the limit). `shown` names it in
/// messages, `what` is the kind of file ("NNet", "ONNX", "VNN-LIB").
pub(crate) fn read_whole(path: &Path, shown: &str, max: u64, what: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let (file, len) = open_regular(path)?;
    if len > max {
        return Err(bad(format!(
            "{shown}: {len} bytes; {what} files of at most {max} bytes are read"
        )));
    }
    let mut bytes = crate::fallible::try_with_capacity(len as usize, what)?;
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(format!("{shown}: {e}")))?;
    if bytes.len() as u64 > max {
        return Err(bad(format!("{shown}: grew past {max} bytes while read")));
    }
    Ok(bytes)
}

/// A regular file opened without blocking on FIFOs or devices, and its length.
pub(crate) fn open_regular(path: &Path) -> Result<(File, u64)> {
    let shown = path.display();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| bad(format!("{shown}: {e}")))?;
    let meta = file.metadata().map_err(|e| bad(format!("{shown}: {e}")))?;
    if !meta.is_file() {
        return Err(bad(format!("{shown}: not a regular file")));
    }
    Ok((file, meta.len()))
}

/// The top-level keys of a JSON object, in order, duplicates kept (serde's maps keep only the
/// last of a repeated key, which would hide a duplicate tensor name).
fn object_keys(json: &str) -> std::result::Result<Vec<String>, serde_json::Error> {
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut keys = Vec::new();
            while let Some(k) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                keys.push(k);
            }
            Ok(keys)
        }
    }
    let mut de = serde_json::Deserializer::from_str(json);
    de.deserialize_map(Keys)
}

/// One tensor's place in a file.
struct Planned {
    name: String,
    dtype: String,
    shape: Vec<u64>,
    file: usize,
    /// Absolute byte range in the file.
    start: u64,
    len: u64,
}

/// Reads one file's header and plans its tensors (absolute offsets).
fn plan_file(
    path: &Path,
    index: usize,
    out: &mut Vec<Planned>,
    hash: &mut sha2::Sha256,
) -> Result<File> {
    let shown = path.display().to_string();
    let (file, file_len) = open_regular(path)?;
    let mut n = [0u8; 8];
    file.read_exact_at(&mut n, 0)
        .map_err(|_| bad(format!("{shown}: shorter than the 8-byte header length")))?;
    let header_len = u64::from_le_bytes(n);
    if header_len > MAX_HEADER || header_len + 8 > file_len {
        return Err(bad(format!(
            "{shown}: the header length {header_len} runs past the file ({file_len} bytes) or the {MAX_HEADER}-byte limit"
        )));
    }
    let mut header = try_vec(header_len as usize, 0u8, "safetensors header")?;
    file.read_exact_at(&mut header, 8)
        .map_err(|e| bad(format!("{shown}: {e}")))?;
    {
        use sha2::Digest;
        hash.update(n);
        hash.update(&header);
    }
    let text = std::str::from_utf8(&header)
        .map_err(|_| bad(format!("{shown}: the header is not UTF-8")))?;
    let keys = object_keys(text).map_err(|e| bad(format!("{shown}: malformed header: {e}")))?;
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = keys.iter().find(|k| !seen.insert(k.as_str())) {
        return Err(bad(format!(
            "{shown}: tensor '{dup}' appears twice in the header"
        )));
    }
    let meta: safetensors::tensor::Metadata =
        serde_json::from_str(text).map_err(|e| bad(format!("{shown}: malformed header: {e}")))?;
    let data_start = 8 + header_len;
    if data_start + meta.data_len() as u64 != file_len {
        return Err(bad(format!(
            "{shown}: the header describes {} data bytes, the file has {}",
            meta.data_len(),
            file_len - data_start
        )));
    }
    let infos = meta.tensors();
    for name in meta.offset_keys() {
        let info = infos
            .get(&name)
            .ok_or_else(|| bad(format!("{shown}: tensor '{name}' vanished")))?;
        let dtype = serde_json::to_value(info.dtype)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        if dtype_size(&dtype).is_none() {
            return Err(VramError::new(
                ErrorKind::Unsupported,
                format!(
                    "{shown}: tensor '{name}' has dtype {dtype}, which libvram does not seal (sub-byte types)"
                ),
            ));
        }
        let (s, e) = info.data_offsets;
        out.push(Planned {
            name,
            dtype,
            shape: info.shape.iter().map(|&d| d as u64).collect(),
            file: index,
            start: data_start + s as u64,
            len: (e - s) as u64,
        });
    }
    Ok(file)
}

/// The files of a checkpoint: one file, or the index's files (each a plain name beside it),
/// with the index's tensor → file map when there is one.
/// The index's map from tensor name to file name.
type WeightMap = BTreeMap<String, String>;

fn files_of(path: &Path) -> Result<(Vec<PathBuf>, Option<WeightMap>)> {
    let meta = std::fs::metadata(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let path = if meta.is_dir() {
        let index = path.join("model.safetensors.index.json");
        let single = path.join("model.safetensors");
        if index.exists() {
            index
        } else if single.exists() {
            single
        } else {
            return Err(bad(format!(
                "{}: a directory with neither model.safetensors.index.json nor model.safetensors",
                path.display()
            )));
        }
    } else {
        path.to_path_buf()
    };
    if !path.to_string_lossy().ends_with(".json") {
        return Ok((vec![path], None));
    }
    let shown = path.display().to_string();
    let (file, len) = open_regular(&path)?;
    if len > MAX_INDEX {
        return Err(bad(format!(
            "{shown}: {len} bytes; an index is read up to {MAX_INDEX}"
        )));
    }
    let mut text = try_vec(len as usize, 0u8, "safetensors index")?;
    file.read_exact_at(&mut text, 0)
        .map_err(|e| bad(format!("{shown}: {e}")))?;
    let v: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| bad(format!("{shown}: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad(format!("{shown}: no weight_map object")))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut files: Vec<String> = Vec::new();
    let mut weight_map = BTreeMap::new();
    for (tensor, f) in map {
        let f = f.as_str().ok_or_else(|| {
            bad(format!(
                "{shown}: weight_map['{tensor}'] is not a file name"
            ))
        })?;
        if f.is_empty() || f.contains('/') || f.contains('\\') || f == "." || f == ".." {
            return Err(bad(format!(
                "{shown}: weight_map['{tensor}'] = '{f}' is not a plain file name beside the index"
            )));
        }
        if !files.iter().any(|x| x == f) {
            files.push(f.to_string());
        }
        weight_map.insert(tensor.clone(), f.to_string());
    }
    files.sort();
    Ok((
        files.iter().map(|f| dir.join(f)).collect(),
        Some(weight_map),
    ))
}

/// The default model name: the file stem, or the directory's name.
fn default_name(path: &Path) -> String {
    // A checkpoint directory, given or holding the index, is named after the directory.
    let stem = if path.is_dir() {
        path.file_name()
    } else if path.extension().is_some_and(|e| e == "json") {
        path.parent().and_then(Path::file_name)
    } else {
        path.file_stem()
    };
    let name: String = stem
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    if name.is_empty() {
        "model".into()
    } else {
        name
    }
}

/// Each file's name in a model-signing statement (its path relative to the model's
/// directory); every file must be listed.
fn signed_names(paths: &[PathBuf], root: &Path, sig: &FileDigests) -> Result<Vec<String>> {
    paths
        .iter()
        .map(|p| {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if sig.files.contains_key(&name) {
                Ok(name)
            } else {
                Err(VramError::new(
                    ErrorKind::Integrity,
                    format!(
                        "{}: not covered by the model-signing statement (no resource '{name}' under {}); nothing was kept",
                        p.display(),
                        root.display()
                    ),
                ))
            }
        })
        .collect()
}

fn check_file_digest(
    hashes: &mut [sha2::Sha256],
    file: usize,
    name: &str,
    sig: &FileDigests,
) -> Result<()> {
    let h = std::mem::replace(&mut hashes[file], <sha2::Sha256 as sha2::Digest>::new());
    let got: [u8; 32] = sha2::Digest::finalize(h).into();
    let want = sig.files.get(name).copied().unwrap_or([0; 32]);
    if bool::from(got.ct_eq(&want)) {
        return Ok(());
    }
    Err(VramError::new(
        ErrorKind::Integrity,
        format!(
            "file '{name}': its SHA-256 differs from the model-signing statement's digest; nothing was kept"
        ),
    ))
}

/// Loads and seals every tensor of the checkpoint at `path` into `ctx`. On any error nothing
/// stays sealed.
pub fn load(ctx: &Context, path: &Path, mut opts: LoadOptions<'_>) -> Result<LoadedModel> {
    let (paths, weight_map) = files_of(path)?;
    let mut planned = Vec::new();
    let mut files = Vec::with_capacity(paths.len());
    // The SHA-256 of each file, fed in file order as it is read (header at planning, then each
    // tensor's bytes: tensors are contiguous and end where the file does, so that is every byte).
    let mut hashes = Vec::with_capacity(paths.len());
    for (i, p) in paths.iter().enumerate() {
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        files.push(plan_file(p, i, &mut planned, &mut h)?);
        hashes.push(h);
    }
    let signed_names = match opts.model_signing {
        Some(sig) => Some(signed_names(&paths, path, sig)?),
        None => None,
    };
    if let Some(map) = &weight_map {
        let names: HashMap<&str, &Path> = planned
            .iter()
            .map(|t| (t.name.as_str(), paths[t.file].as_path()))
            .collect();
        if names.len() != planned.len() {
            return Err(bad("a tensor name appears in two files of the checkpoint"));
        }
        for (tensor, file) in map {
            match names.get(tensor.as_str()) {
                Some(p) if p.file_name().and_then(|f| f.to_str()) == Some(file.as_str()) => {}
                _ => {
                    return Err(bad(format!(
                        "the index maps '{tensor}' to {file}, which does not hold it"
                    )));
                }
            }
        }
        if let Some(t) = planned.iter().find(|t| !map.contains_key(&t.name)) {
            return Err(bad(format!(
                "'{}' is in {} but not in the index",
                t.name,
                paths[t.file].display()
            )));
        }
    }
    if let Some(expected) = opts.expected {
        let names: std::collections::HashSet<&str> =
            planned.iter().map(|t| t.name.as_str()).collect();
        if let Some(missing) = expected
            .tensors
            .iter()
            .find(|t| !names.contains(t.name.as_str()))
        {
            return Err(VramError::new(
                ErrorKind::Integrity,
                format!(
                    "tensor '{}' of the expected manifest is not in the files; nothing was kept",
                    missing.name
                ),
            ));
        }
    }
    let total: u64 = planned.iter().map(|t| t.len).sum();
    // Every tensor against the expected manifest's entry before a byte is read.
    let mut expected_entries = Vec::with_capacity(planned.len());
    for t in &planned {
        let Some(m) = opts.expected else {
            expected_entries.push(None);
            continue;
        };
        let e = m.tensor(&t.name).ok_or_else(|| {
            VramError::new(
                ErrorKind::Integrity,
                format!(
                    "tensor '{}' is not in the expected manifest; nothing was kept",
                    t.name
                ),
            )
        })?;
        if e.dtype != t.dtype || e.shape != t.shape || e.byte_len != t.len {
            return Err(VramError::new(
                ErrorKind::Integrity,
                format!(
                    "tensor '{}' is {} {:?} in the files, {} {:?} in the expected manifest; nothing was kept",
                    t.name, t.dtype, t.shape, e.dtype, e.shape
                ),
            ));
        }
        expected_entries.push(Some(e));
    }
    // Non-empty tensors are sealed in one pass, streamed from the files; empty ones have
    // nothing to seal.
    let sealed: Vec<usize> = (0..planned.len()).filter(|&i| planned[i].len > 0).collect();
    let items: Vec<SealItem<'_>> = sealed
        .iter()
        .map(|&i| SealItem {
            id: planned[i].name.as_bytes(),
            len: planned[i].len,
            leaf_size: expected_entries[i].map(|e| e.leaf_size),
        })
        .collect();
    let source = FileSource {
        files: &files,
        paths: &paths,
        planned: &planned,
        sealed: &sealed,
    };
    let mut watch = LoadWatch {
        planned: &planned,
        sealed: &sealed,
        expected: &expected_entries,
        signing: opts
            .model_signing
            .zip(signed_names.as_deref())
            .map(|(sig, names)| Signing {
                sig,
                names,
                hashes: &mut hashes,
                last_job_of_file: last_job_of_file(&planned, &sealed, paths.len()),
                seen: 0,
            }),
        progress: opts.progress.take(),
        total,
        reported: 0,
        reported_jobs: 0,
    };
    let shards = ctx.seal_many(&items, &source, &mut watch)?;
    if let Some(s) = watch.signing.as_mut() {
        // Files with no bytes to seal (only empty tensors, or none): their digest covers the
        // header alone, read at planning.
        for f in 0..paths.len() {
            if s.last_job_of_file[f].is_none() {
                check_file_digest(s.hashes, f, &s.names[f], s.sig)?;
            }
        }
    }
    // Tensors after the last sealed one (empty ones) are reported too.
    watch.report_until(watch.planned.len(), total)?;
    let mut shards = shards.into_iter().map(Arc::new);
    let mut tensors = Vec::with_capacity(planned.len());
    let mut entries = Vec::with_capacity(planned.len());
    for t in planned {
        let shard = if t.len == 0 { None } else { shards.next() };
        entries.push(TensorEntry {
            name: t.name.clone(),
            dtype: t.dtype.clone(),
            shape: t.shape.clone(),
            byte_len: t.len,
            leaf_size: shard.as_ref().map_or(4096, |s| s.layout().leaf_size),
            root: shard.as_ref().map_or_else(empty_root, |s| s.root()),
            regions: shard
                .as_ref()
                .filter(|_| opts.region_roots)
                .map(|s| s.level.clone())
                .or_else(|| (opts.region_roots && t.len == 0).then(Vec::new)),
        });
        tensors.push(LoadedTensor {
            name: t.name,
            dtype: t.dtype,
            shape: t.shape,
            byte_len: t.len,
            shard,
        });
    }
    let name = opts
        .model_name
        .map_or_else(|| default_name(path), str::to_string);
    let manifest = Manifest::new(&name, ctx.key_id(), entries)?;
    Ok(LoadedModel { tensors, manifest })
}

fn cancelled() -> VramError {
    VramError::new(
        ErrorKind::Cancelled,
        "the progress callback cancelled the load; nothing was kept",
    )
}

/// The tensors' bytes, read from their files by the backend's worker threads.
struct FileSource<'a> {
    files: &'a [File],
    paths: &'a [PathBuf],
    planned: &'a [Planned],
    /// Job → tensor.
    sealed: &'a [usize],
}

impl Source for FileSource<'_> {
    fn fill(&self, job: usize, offset: u64, dst: &mut [u8]) -> Result<()> {
        let t = self
            .sealed
            .get(job)
            .and_then(|&i| self.planned.get(i))
            .ok_or_else(|| bad("a tensor outside the plan"))?;
        self.files[t.file]
            .read_exact_at(dst, t.start + offset)
            .map_err(|e| {
                bad(format!(
                    "{}: reading '{}': {e}",
                    self.paths[t.file].display(),
                    t.name
                ))
            })
    }
}

/// The model-signing check: each file's SHA-256, fed in file order.
struct Signing<'a> {
    sig: &'a FileDigests,
    names: &'a [String],
    hashes: &'a mut [sha2::Sha256],
    /// The last sealed tensor (job) of each file: its digest is checked once that one is read.
    last_job_of_file: Vec<Option<usize>>,
    /// Bytes of the current job seen so far.
    seen: u64,
}

fn last_job_of_file(planned: &[Planned], sealed: &[usize], files: usize) -> Vec<Option<usize>> {
    let mut last = vec![None; files];
    for (job, &i) in sealed.iter().enumerate() {
        last[planned[i].file] = Some(job);
    }
    last
}

/// What the load checks while the pass streams: file digests, expected roots, progress.
struct LoadWatch<'a, 'p> {
    planned: &'a [Planned],
    sealed: &'a [usize],
    expected: &'a [Option<&'a TensorEntry>],
    signing: Option<Signing<'a>>,
    progress: Option<&'p mut dyn FnMut(u64, u64) -> bool>,
    total: u64,
    /// Tensors reported to `progress` so far (one call per tensor, empty ones too).
    reported: usize,
    /// Sealed tensors reported so far.
    reported_jobs: usize,
}

impl LoadWatch<'_, '_> {
    /// Reports every tensor before `end` not yet reported, with `done` bytes done.
    fn report_until(&mut self, end: usize, done: u64) -> Result<()> {
        while self.reported < end {
            self.reported += 1;
            if let Some(p) = self.progress.as_mut() {
                if !p(done, self.total) {
                    return Err(cancelled());
                }
            }
        }
        Ok(())
    }
}

impl Watch for LoadWatch<'_, '_> {
    fn wants_bytes(&self) -> bool {
        self.signing.is_some()
    }

    fn bytes(&mut self, job: usize, bytes: &[u8]) -> Result<()> {
        let Some(s) = self.signing.as_mut() else {
            return Ok(());
        };
        let t = &self.planned[self.sealed[job]];
        sha2::Digest::update(&mut s.hashes[t.file], bytes);
        s.seen += bytes.len() as u64;
        if s.seen == t.len {
            s.seen = 0;
            if s.last_job_of_file[t.file] == Some(job) {
                check_file_digest(s.hashes, t.file, &s.names[t.file], s.sig)?;
            }
        }
        Ok(())
    }

    fn hashed(&mut self, job: usize, level: &[Hash]) -> Result<()> {
        let i = self.sealed[job];
        let Some(e) = self.expected[i] else {
            return Ok(());
        };
        let root = root_from_level(level).unwrap_or([0; 32]);
        if bool::from(root.ct_eq(&e.root)) {
            return Ok(());
        }
        let layout = TreeLayout::new(e.byte_len, e.leaf_size);
        let at = e.differing_region_text(level, layout.region_size());
        Err(VramError::new(
            ErrorKind::Integrity,
            format!(
                "tensor '{}' differs from the expected manifest{at}; nothing was kept",
                self.planned[i].name
            ),
        ))
    }

    fn progress(&mut self, done: u64) -> Result<()> {
        // `done` counts the sealed tensors so far; the one just sealed is the last of them.
        let last = self.sealed.get(self.reported_jobs).copied().unwrap_or(0);
        self.reported_jobs += 1;
        let before = done.saturating_sub(self.planned[last].len);
        self.report_until(last, before)?;
        self.report_until(last + 1, done)
    }
}
