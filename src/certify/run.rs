//! A verdict about a sealed model: its weights verified where they live before and after the
//! search, and named by their combined root.

use sha2::{Digest, Sha256};

use super::bab::{self, Options, Outcome};
use super::engine::{Cpu, Gpu};
use super::vnnlib::Property;
use crate::context::Outcome as Check;
use crate::error::{ErrorKind, Result, VramError};
use crate::ibp::Model;
use crate::seal::merkle::Hash;
use crate::seal::record::Residency;

/// A verdict and what it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub outcome: Outcome,
    /// The model's combined weights root (see [`weights_root`]), verified before and after.
    pub weights_root: Hash,
}

/// SHA-256 over `"libvram model weights v1\n"` then, per sealed tensor in the model's order,
/// its id's length (u32, little-endian), its id and its Merkle root: one value that names every
/// weight of the model.
pub fn weights_root(model: &Model) -> Hash {
    let mut h = Sha256::new();
    h.update(b"libvram model weights v1\n");
    for s in model.params() {
        h.update((s.id().len() as u32).to_le_bytes());
        h.update(s.id().as_bytes());
        h.update(s.root());
    }
    h.finalize().into()
}

fn intact(model: &Model, when: &str) -> Result<()> {
    let r = model.verify(model.context())?;
    match r.outcome {
        Check::Intact => Ok(()),
        Check::Damaged => Err(VramError::new(
            ErrorKind::Integrity,
            format!(
                "certify: the model's weights differ from their seal {when} (first damaged byte \
                 offset {}); no verdict",
                r.first_damaged_offset
            ),
        )),
        Check::BadSeal => Err(VramError::new(
            ErrorKind::BadSeal,
            format!("certify: a seal record of the model is not authentic {when}; no verdict"),
        )),
    }
}

/// Decides `prop` over `model`: weights verified before the search and again after it (a
/// weight that changed in between is an error, never a verdict). The search runs where the
/// weights live: on the CPU over a host-backed model's, on the GPU over a CUDA-backed model's
/// (whose graph must then be a dense chain; weights are never copied to the host).
pub fn certify(model: &Model, prop: &Property, opts: &Options<'_>) -> Result<Report> {
    intact(model, "before the search")?;
    let outcome = match model.context().residency() {
        Residency::Host => {
            let net = model.host_network()?;
            let engine = Cpu::new(&net, model.context().backend().cpu_threads());
            bab::decide(&engine, prop, opts)?
        }
        Residency::Cuda { .. } => {
            let threads = model.context().backend().cpu_threads();
            bab::decide(&Gpu::new(model, threads)?, prop, opts)?
        }
    };
    intact(model, "after the search")?;
    Ok(Report {
        outcome,
        weights_root: weights_root(model),
    })
}
