//! ONNX import: a feed-forward `.onnx` network into a model whose weights are sealed shards.
//!
//! The graph is read in its (topological) node order and each supported operator becomes one
//! builder node. Values keep their ONNX shape without the batch dimension; the builder node
//! behind a value has the same number of elements (an ONNX shape may carry extra unit
//! dimensions, e.g. `[1, 1, 50]` after a MatMul of a `[1, 1, 5]` input).
//!
//! Supported: Gemm, MatMul (+ Add of a bias, fused), Conv, Relu, LeakyRelu, Sigmoid, Tanh,
//! Flatten, Reshape (to the same shape or flat), Add (of two values or of a constant), Sub and
//! Div by constants, BatchNormalization, AveragePool, MaxPool, Identity, Dropout, Constant.
//! Anything else is refused with `Unsupported` naming the node and its operator.

mod graph;
pub mod proto;
mod tensor;

use std::path::Path;
use std::sync::Arc;

use super::model::Model;
use crate::context::Context;
use crate::error::{ErrorKind, Result, VramError};

/// Largest `.onnx` file read: protobuf messages are limited to 2 GiB.
pub const MAX_FILE: u64 = 2 << 30;

/// `Unsupported`, naming what was refused.
pub(crate) fn unsupported(what: &str, reason: impl std::fmt::Display) -> VramError {
    VramError::new(
        ErrorKind::Unsupported,
        format!("onnx: {what}: {reason} is not supported"),
    )
}

fn bad(reason: impl std::fmt::Display) -> VramError {
    VramError::invalid("path", format!("onnx: {reason}"))
}

/// Reads an ONNX file into a model whose weights are sealed in `ctx`, named `name` (or the
/// file's stem).
pub fn load(ctx: Arc<Context>, path: &Path, name: Option<&str>) -> Result<Model> {
    let shown = path.display().to_string();
    let bytes = crate::load::read_whole(path, &shown, MAX_FILE, "ONNX")?;
    let name = match name {
        Some(n) => n.to_string(),
        None => super::name_from_path(path, "onnx"),
    };
    parse(ctx, &bytes, &name)
}

/// Imports ONNX bytes (what [`load`] does after reading the file; the fuzz target's entry).
pub fn parse(ctx: Arc<Context>, bytes: &[u8], name: &str) -> Result<Model> {
    let model = proto::decode(bytes).map_err(|e| bad(format!("not an ONNX model: {e}")))?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| bad("the model has no graph"))?;
    graph::import(ctx, &model, graph, name)
}
