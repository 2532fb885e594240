//! Verdicts about networks: properties in (VNN-LIB), decided over a sealed model by branch
//! and bound with sound linear bounds, and a counterexample search whose finds are confirmed by
//! sound bounds before they are reported.

pub mod attack;
pub mod bab;
pub mod contract;
pub mod engine;
pub mod run;
pub mod vnnlib;
