//! `vram`: seal safetensors models into an authenticated manifest, verify files against one,
//! inspect seal records and manifests. Built with the library (`cargo build --release` gives
//! `target/release/vram`; `cmake --install` installs it).
//!
//! Exit status: 0 every tensor matches; 6 bytes differ (each damaged tensor printed with the
//! byte offset of its first damaged 1 MiB region); 7 the manifest or record is not authentic
//! under the key; 2 bad input (a missing or malformed file, a bad key file).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use vram::backend::BackendChoice;
use vram::context::{Context, ContextOptions};
use vram::error::{ErrorKind, VramError};
use vram::load::{LoadOptions, LoadedModel};
use vram::seal::SealRecord;
use vram::seal::manifest::{Manifest, TensorEntry};

mod certify;

const EXIT_DIFFERS: u8 = 6;
const EXIT_NOT_AUTHENTIC: u8 = 7;
const EXIT_BAD_INPUT: u8 = 2;

#[derive(Parser)]
#[command(
    name = "vram",
    version,
    about = "Sealed model weights: seal, verify, inspect; certified verdicts: certify"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    Auto,
    Cuda,
    Host,
}

#[derive(Subcommand)]
enum Command {
    /// Load safetensors files (a file, a directory, or a model.safetensors.index.json), seal
    /// every tensor and write the model's manifest (with 1 MiB region roots).
    Seal {
        /// The secret: a file of at least 32 raw bytes (or set VRAM_KEY_FILE).
        #[arg(long, env = "VRAM_KEY_FILE")]
        key_file: PathBuf,
        #[arg(long, value_enum, default_value = "auto")]
        backend: Backend,
        /// The model's name in the manifest (default: the first path's stem).
        #[arg(long)]
        name: Option<String>,
        /// Where to write the manifest.
        #[arg(short, long)]
        output: PathBuf,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Check safetensors files against a manifest: exit 0 when every tensor matches, 6 when
    /// bytes differ, 7 when the manifest is not authentic under the key, 2 for bad input.
    Verify {
        #[arg(long, env = "VRAM_KEY_FILE")]
        key_file: PathBuf,
        #[arg(long, value_enum, default_value = "auto")]
        backend: Backend,
        #[arg(long)]
        manifest: PathBuf,
        /// Also check every file's SHA-256 against an OpenSSF model-signing bundle (or its
        /// in-toto statement) whose signature model-signing has verified, in the same read.
        #[arg(long)]
        model_signing: Option<PathBuf>,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Decide a VNN-LIB property over an ONNX (or NNet) network: prints `holds`, `violated`
    /// with a counterexample checked by sound bounds, or `unknown` at the time limit. The
    /// weights are sealed, verified before and after the search, and named by their root.
    /// Exit 0 with a verdict (any of the three), 6 if the weights changed during the run, 2
    /// for bad input.
    Certify {
        /// The network: `.onnx` (its own input convention) or `.nnet` (physical inputs,
        /// clipped to the file's range: a different function where the box leaves it).
        network: PathBuf,
        /// The property (VNN-LIB).
        property: PathBuf,
        /// Seconds before giving up with `unknown`.
        #[arg(long, default_value_t = 300.0)]
        timeout: f64,
        /// Where the weights are sealed, and so where the search runs: `host` on the CPU,
        /// `cuda` on the GPU (networks that are chains of linear layers with ReLU).
        #[arg(long, value_enum, default_value = "host")]
        backend: Backend,
        /// Worker threads (0: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Also write the result in VNN-COMP's format (`unsat`, `sat` + witness, `timeout`).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Seed of the counterexample search.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// A seal key file (default: a fresh random key; roots do not depend on it).
        #[arg(long, env = "VRAM_KEY_FILE")]
        key_file: Option<PathBuf>,
    },
    /// Show a manifest or a seal record; with a key, authenticate it first (exit 7 if not).
    Inspect {
        #[arg(long, env = "VRAM_KEY_FILE")]
        key_file: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        path: PathBuf,
    },
}

/// A failure with its exit status.
struct Fail(u8, String);

impl From<VramError> for Fail {
    fn from(e: VramError) -> Self {
        let code = match e.kind {
            ErrorKind::BadSeal => EXIT_NOT_AUTHENTIC,
            ErrorKind::Integrity => EXIT_DIFFERS,
            _ => EXIT_BAD_INPUT,
        };
        Fail(code, e.message)
    }
}

fn read_key(path: &Path) -> Result<Vec<u8>, Fail> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| Fail(EXIT_BAD_INPUT, format!("key file {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(Fail(
            EXIT_BAD_INPUT,
            format!("key file {}: not a regular file", path.display()),
        ));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        eprintln!(
            "warning: key file {} is readable by others (mode {:o}); chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    let key = std::fs::read(path)
        .map_err(|e| Fail(EXIT_BAD_INPUT, format!("key file {}: {e}", path.display())))?;
    if key.len() < 32 || key.len() > 4096 {
        return Err(Fail(
            EXIT_BAD_INPUT,
            format!(
                "key file {}: {} bytes; a key file holds 32 to 4096 raw bytes",
                path.display(),
                key.len()
            ),
        ));
    }
    Ok(key)
}

fn context(key: &[u8], backend: Backend) -> Result<Arc<Context>, Fail> {
    let backend = match backend {
        Backend::Auto => BackendChoice::Auto,
        Backend::Cuda => BackendChoice::Cuda,
        Backend::Host => BackendChoice::Host,
    };
    Ok(Arc::new(Context::new(&ContextOptions {
        backend,
        device: 0,
        secret: key,
        capacity_bytes: 0,
        allow_fault_drills: false,
        max_threads: 0,
    })?))
}

fn bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Loads (and seals) every path; a progress bar on stderr.
fn load_all(
    ctx: &Context,
    paths: &[PathBuf],
    region_roots: bool,
    signing: Option<&vram::model_signing::FileDigests>,
) -> Result<Vec<LoadedModel>, Fail> {
    let mut models = Vec::new();
    for path in paths {
        let bar = bar();
        bar.set_message(path.display().to_string());
        let mut progress = |done: u64, total: u64| {
            bar.set_length(total);
            bar.set_position(done);
            true
        };
        let loaded = vram::load::load(
            ctx,
            path,
            LoadOptions {
                model_name: None,
                expected: None,
                region_roots,
                progress: Some(&mut progress),
                model_signing: signing,
            },
        );
        bar.finish_and_clear();
        models.push(loaded.map_err(Fail::from)?);
    }
    Ok(models)
}

fn seal(
    key_file: &Path,
    backend: Backend,
    name: Option<String>,
    output: &Path,
    paths: &[PathBuf],
) -> Result<(), Fail> {
    let key = read_key(key_file)?;
    let ctx = context(&key, backend)?;
    let models = load_all(&ctx, paths, true, None)?;
    let name = name.unwrap_or_else(|| {
        models
            .first()
            .map_or("model".into(), |m| m.manifest.model.clone())
    });
    let entries: Vec<TensorEntry> = models
        .iter()
        .flat_map(|m| m.manifest.tensors.clone())
        .collect();
    let bytes: u64 = entries.iter().map(|t| t.byte_len).sum();
    let manifest =
        Manifest::new(&name, ctx.key_id(), entries).map_err(|e| Fail(EXIT_BAD_INPUT, e.message))?;
    let encoded = ctx.encode_manifest(&manifest)?;
    std::fs::write(output, encoded)
        .map_err(|e| Fail(EXIT_BAD_INPUT, format!("{}: {e}", output.display())))?;
    println!(
        "sealed {} tensors ({bytes} bytes) of model '{name}' on {}; manifest written to {}",
        manifest.tensors.len(),
        residency(&ctx),
        output.display()
    );
    Ok(())
}

fn residency(ctx: &Context) -> String {
    match ctx.residency() {
        vram::seal::Residency::Host => "the host backend".into(),
        vram::seal::Residency::Cuda { device } => format!("GPU {device}"),
    }
}

fn verify(
    key_file: &Path,
    backend: Backend,
    manifest: &Path,
    model_signing: Option<&Path>,
    paths: &[PathBuf],
) -> Result<(), Fail> {
    let key = read_key(key_file)?;
    let ctx = context(&key, backend)?;
    let bytes = std::fs::read(manifest)
        .map_err(|e| Fail(EXIT_BAD_INPUT, format!("{}: {e}", manifest.display())))?;
    let expected = ctx.open_manifest(&bytes).map_err(|e| match e.kind {
        ErrorKind::BadSeal => Fail(
            EXIT_NOT_AUTHENTIC,
            format!("{}: {}", manifest.display(), e.message),
        ),
        _ => Fail(
            EXIT_BAD_INPUT,
            format!("{}: {}", manifest.display(), e.message),
        ),
    })?;
    let signing = match model_signing {
        Some(p) => {
            let bytes = std::fs::read(p)
                .map_err(|e| Fail(EXIT_BAD_INPUT, format!("{}: {e}", p.display())))?;
            Some(
                vram::model_signing::FileDigests::parse(&bytes)
                    .map_err(|e| Fail(EXIT_BAD_INPUT, format!("{}: {}", p.display(), e.message)))?,
            )
        }
        None => None,
    };
    let models = load_all(&ctx, paths, true, signing.as_ref())?;
    let loaded: Vec<&TensorEntry> = models
        .iter()
        .flat_map(|m| m.manifest.tensors.iter())
        .collect();
    let mut problems = 0usize;
    let mut out = std::io::stdout().lock();
    for e in &expected.tensors {
        match loaded.iter().find(|t| t.name == e.name) {
            None => {
                problems += 1;
                let _ = writeln!(out, "MISSING  {}", e.name);
            }
            Some(t) if t.byte_len != e.byte_len || t.dtype != e.dtype || t.shape != e.shape => {
                problems += 1;
                let _ = writeln!(
                    out,
                    "DIFFERS  {}: {} {:?} ({} bytes) in the files, {} {:?} ({} bytes) in the manifest",
                    e.name, t.dtype, t.shape, t.byte_len, e.dtype, e.shape, e.byte_len
                );
            }
            Some(t) if t.root != e.root => {
                problems += 1;
                let at = t
                    .regions
                    .as_deref()
                    .and_then(|level| e.first_differing_region(level))
                    .map_or_else(
                        || "unknown offset".to_string(),
                        |r| format!("byte offset {}", r << 20),
                    );
                let _ = writeln!(
                    out,
                    "DAMAGED  {}: first damaged 1 MiB region at {at}",
                    e.name
                );
            }
            Some(_) => {}
        }
    }
    for t in &loaded {
        if expected.tensor(&t.name).is_none() {
            problems += 1;
            let _ = writeln!(out, "EXTRA    {}: not in the manifest", t.name);
        }
    }
    if problems > 0 {
        return Err(Fail(
            EXIT_DIFFERS,
            format!("{problems} tensor(s) of model '{}' differ", expected.model),
        ));
    }
    let _ = writeln!(
        out,
        "OK: all {} tensors of model '{}' match the manifest (verified on {})",
        expected.tensors.len(),
        expected.model,
        residency(&ctx)
    );
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn inspect(key_file: Option<&Path>, json: bool, path: &Path) -> Result<(), Fail> {
    let bytes = std::fs::read(path)
        .map_err(|e| Fail(EXIT_BAD_INPUT, format!("{}: {e}", path.display())))?;
    let ctx = match key_file {
        Some(k) => Some(context(&read_key(k)?, Backend::Host)?),
        None => None,
    };
    let authenticated = ctx.is_some();
    let not_authentic = |e: VramError| match e.kind {
        ErrorKind::BadSeal => Fail(
            EXIT_NOT_AUTHENTIC,
            format!("{}: {}", path.display(), e.message),
        ),
        _ => Fail(EXIT_BAD_INPUT, format!("{}: {}", path.display(), e.message)),
    };
    let value = if bytes.starts_with(b"VRAMSEAL") {
        let r = match &ctx {
            Some(c) => c.record_open(&bytes).map_err(not_authentic)?,
            None => SealRecord::peek(&bytes).map_err(not_authentic)?,
        };
        serde_json::json!({
            "kind": "seal record",
            "authenticated": authenticated,
            "shard_id": r.shard_id,
            "byte_len": r.byte_len,
            "leaf_size": r.leaf_size,
            "root": hex(&r.root),
            "residency": match r.residency {
                vram::seal::Residency::Host => "host".to_string(),
                vram::seal::Residency::Cuda { device } => format!("cuda:{device}"),
            },
            "seal_time_unix_ns": r.seal_time_unix_ns,
            "key_id": hex(&r.key_id),
        })
    } else {
        let m = match &ctx {
            Some(c) => c.open_manifest(&bytes).map_err(not_authentic)?,
            None => Manifest::peek(&bytes).map_err(not_authentic)?,
        };
        serde_json::json!({
            "kind": "manifest",
            "authenticated": authenticated,
            "model": m.model,
            "key_id": hex(&m.key_id),
            "tensors": m.tensors.iter().map(|t| serde_json::json!({
                "name": t.name,
                "dtype": t.dtype,
                "shape": t.shape,
                "byte_len": t.byte_len,
                "root": hex(&t.root),
                "region_roots": t.regions.as_ref().map_or(0, Vec::len),
            })).collect::<Vec<_>>(),
        })
    };
    if json {
        println!("{value:#}");
        return Ok(());
    }
    println!(
        "{} ({})",
        value["kind"].as_str().unwrap_or(""),
        if authenticated {
            "authentic under the key"
        } else {
            "NOT authenticated: no key given"
        }
    );
    if let Some(obj) = value.as_object() {
        for (k, v) in obj {
            if k == "tensors" {
                for t in v.as_array().into_iter().flatten() {
                    println!(
                        "  {}  {} {}  {} bytes  root {}",
                        t["name"].as_str().unwrap_or(""),
                        t["dtype"].as_str().unwrap_or(""),
                        t["shape"],
                        t["byte_len"],
                        t["root"].as_str().unwrap_or("")
                    );
                }
            } else if k != "kind" && k != "authenticated" {
                println!(
                    "{k}: {}",
                    v.as_str().map_or_else(|| v.to_string(), str::to_string)
                );
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_BAD_INPUT } else { 0 });
        }
    };
    let result = match &cli.command {
        Command::Seal {
            key_file,
            backend,
            name,
            output,
            paths,
        } => seal(key_file, *backend, name.clone(), output, paths),
        Command::Verify {
            key_file,
            backend,
            manifest,
            model_signing,
            paths,
        } => verify(
            key_file,
            *backend,
            manifest,
            model_signing.as_deref(),
            paths,
        ),
        Command::Inspect {
            key_file,
            json,
            path,
        } => inspect(key_file.as_deref(), *json, path),
        Command::Certify {
            network,
            property,
            timeout,
            backend,
            threads,
            output,
            seed,
            key_file,
        } => certify::run(&certify::Args {
            network,
            property,
            timeout: *timeout,
            backend: match backend {
                Backend::Auto => BackendChoice::Auto,
                Backend::Cuda => BackendChoice::Cuda,
                Backend::Host => BackendChoice::Host,
            },
            threads: *threads,
            output: output.as_deref(),
            seed: *seed,
            key_file: key_file.as_deref(),
        })
        .map_err(|e| match e {
            certify::Error::Lib(e) => Fail::from(e),
            certify::Error::Io(m) => Fail(EXIT_BAD_INPUT, m),
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(code, message)) => {
            eprintln!("vram: {message}");
            ExitCode::from(code)
        }
    }
}
