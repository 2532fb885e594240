//! `vram certify NET PROP`: a verdict about a sealed network, in words and in VNN-COMP's result
//! format.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use vram::backend::BackendChoice;
use vram::certify::bab::{Options, Progress, Verdict};
use vram::certify::vnnlib;
use vram::context::{Context, ContextOptions};
use vram::error::VramError;

pub struct Args<'a> {
    pub network: &'a Path,
    pub property: &'a Path,
    pub timeout: f64,
    pub backend: BackendChoice,
    pub threads: usize,
    pub output: Option<&'a Path>,
    pub seed: u64,
    pub key_file: Option<&'a Path>,
}

pub enum Error {
    Lib(VramError),
    Io(String),
}

impl From<VramError> for Error {
    fn from(e: VramError) -> Self {
        Error::Lib(e)
    }
}

/// A fresh 32-byte key from the OS (roots are unkeyed, so the verdict does not depend on it).
fn random_key() -> Result<Vec<u8>, Error> {
    let mut key = vec![0u8; 32];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(|e| Error::Io(format!("/dev/urandom: {e}")))?;
    Ok(key)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The VNN-COMP result text of a verdict.
fn vnncomp(verdict: &Verdict, n_out: usize) -> String {
    match verdict {
        Verdict::Holds => "unsat\n".into(),
        Verdict::Violated(w) => {
            let mut t = String::from("sat\n(");
            let mut lines: Vec<String> = w
                .input
                .iter()
                .enumerate()
                .map(|(i, x)| format!("(X_{i} {x:e})"))
                .collect();
            lines.extend((0..n_out).map(|j| {
                let y = 0.5 * w.out_lo[j] + 0.5 * w.out_hi[j];
                format!("(Y_{j} {y:e})")
            }));
            t += &lines.join("\n ");
            t += ")\n";
            t
        }
        Verdict::Unknown(why) if why.starts_with("time") => "timeout\n".into(),
        Verdict::Unknown(_) => "unknown\n".into(),
    }
}

pub fn run(a: &Args<'_>) -> Result<(), Error> {
    if !(a.timeout.is_finite() && a.timeout > 0.0) {
        return Err(Error::Io(format!(
            "--timeout {}: must be > 0 seconds",
            a.timeout
        )));
    }
    let key = match a.key_file {
        Some(p) => std::fs::read(p).map_err(|e| Error::Io(format!("{}: {e}", p.display())))?,
        None => random_key()?,
    };
    let ctx = Arc::new(Context::new(&ContextOptions {
        backend: a.backend,
        device: 0,
        secret: &key,
        capacity_bytes: 0,
        allow_fault_drills: false,
        max_threads: a.threads,
    })?);
    let start = std::time::Instant::now();
    let model = match a.network.extension().and_then(|e| e.to_str()) {
        Some("nnet") => vram::ibp::nnet::load(Arc::clone(&ctx), a.network)?,
        _ => vram::ibp::onnx::load(Arc::clone(&ctx), a.network, None)?,
    };
    let src = std::fs::read(a.property)
        .map_err(|e| Error::Io(format!("{}: {e}", a.property.display())))?;
    let text = String::from_utf8(src)
        .map_err(|_| Error::Io(format!("{}: not UTF-8 text", a.property.display())))?;
    let prop = vnnlib::parse(&text)
        .map_err(|e| VramError::new(e.kind, format!("{}: {}", a.property.display(), e.message)))?;
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let b = ProgressBar::new_spinner();
        b.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        Some(b)
    } else {
        None
    };
    let report_progress = |p: &Progress| {
        if let Some(b) = &bar {
            b.set_message(format!(
                "{} boxes, {:.2}% proven, {:.1} s",
                p.boxes,
                100.0 * p.proven,
                p.elapsed.as_secs_f64()
            ));
        }
        true
    };
    let opts = Options {
        timeout: Duration::from_secs_f64(a.timeout).saturating_sub(start.elapsed()),
        batch: 0,
        progress: Some(&report_progress),
        seed: a.seed,
    };
    let report = vram::certify::run::certify(&model, &prop, &opts)?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let o = &report.outcome;
    let word = match &o.verdict {
        Verdict::Holds => "holds",
        Verdict::Violated(_) => "violated",
        Verdict::Unknown(_) => "unknown",
    };
    println!("{word}");
    if let Verdict::Violated(w) = &o.verdict {
        print!("{}", vnncomp(&o.verdict, model.output_size()));
        println!(
            "case {} of the property; outputs enclosed by sound bounds at that input",
            w.case
        );
    }
    if let Verdict::Unknown(why) = &o.verdict {
        println!("why: {why}");
    }
    println!(
        "model {} weights root {} ({} tensors, verified before and after)",
        model.name(),
        hex(&report.weights_root),
        model.params().len()
    );
    println!(
        "{} boxes, {:.4}% of the region proven, {:.3} s ({:.3} s bounding, {:.3} s searching)",
        o.boxes,
        100.0 * o.proven,
        o.elapsed.as_secs_f64(),
        o.bounding.as_secs_f64(),
        o.searching.as_secs_f64()
    );
    if let Some(out) = a.output {
        std::fs::write(out, vnncomp(&o.verdict, model.output_size()))
            .map_err(|e| Error::Io(format!("{}: {e}", out.display())))?;
    }
    Ok(())
}
