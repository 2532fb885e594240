//! Verdicts about networks: properties in (VNN-LIB), and (to come) the search that decides
//! them over a sealed model.

pub mod vnnlib;
