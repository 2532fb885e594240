//! Verdicts about networks: properties in (VNN-LIB), decided over a sealed model by branch
//! and bound with sound linear bounds, and a counterexample search whose finds are confirmed by
//! sound bounds before they are reported.

pub mod attack;
pub mod bab;
pub mod contract;
pub mod engine;
pub mod run;
pub mod vnnlib;

/// Where the ACAS Xu test data are (`VRAM_ACASXU_DIR`, or `../shared/data/acasxu` beside the
/// repository), for the unit tests.
#[cfg(test)]
pub(crate) fn acasxu_dir() -> std::path::PathBuf {
    std::env::var_os("VRAM_ACASXU_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/acasxu")
        })
}
