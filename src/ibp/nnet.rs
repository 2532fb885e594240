//! The NNet text format (Kyle Julian, Stanford 2016; the ACAS Xu networks): `//` comments, a
//! header `layers,inputs,outputs,max_layer_size`, the layer sizes, a flag line, input minimums,
//! maximums, means and ranges (the last two with the output's appended), then per layer its
//! weight rows followed by its biases. Hidden layers are followed by ReLU, the last is not.
//!
//! The model starts with the file's input clipping and normalisation, so callers pass
//! physical inputs; its outputs are the network's own (not de-normalised), the convention of
//! the VNN-COMP properties.
//!
//! The reader is strict: every line holds exactly the values the format puts there (a trailing
//! comma is allowed, as the files have one), the header's counts must agree with the layer
//! sizes, nothing but blank lines may follow the last bias, and only regular files of at most
//! [`MAX_FILE`] bytes are read. Declared sizes are checked against the file's length before
//! anything is allocated for them.

use std::sync::Arc;

use super::builder::{Builder, PREV};
use super::graph::Op;
use super::limits::{MAX_NODE_SIZE, MAX_NODES};
use super::model::Model;
use crate::context::Context;
use crate::error::{Result, VramError};
use crate::fallible::try_with_capacity;

/// Largest NNet file accepted: 256 MiB (the ACAS Xu files are about 100 KB).
pub const MAX_FILE: u64 = 256 << 20;
/// Longest token quoted in an error message.
const MAX_QUOTE: usize = 32;

fn bad(reason: impl std::fmt::Display) -> VramError {
    VramError::invalid("path", reason)
}

/// A token cut for quoting in a message.
fn quote(t: &str) -> String {
    let mut q: String = t
        .chars()
        .take(MAX_QUOTE)
        .flat_map(char::escape_debug)
        .collect();
    if t.chars().count() > MAX_QUOTE {
        q.push_str("...");
    }
    q
}

struct Numbers<'a> {
    lines: std::str::Lines<'a>,
    line_no: usize,
}

impl<'a> Numbers<'a> {
    /// Skips the leading `//` comment lines.
    fn new(text: &'a str) -> Self {
        let mut lines = text.lines();
        let mut line_no = 0;
        let mut rest = lines.clone();
        while rest
            .next()
            .is_some_and(|l| l.trim_start().starts_with("//"))
        {
            lines.next();
            line_no += 1;
        }
        Self { lines, line_no }
    }

    /// The next line's values: exactly `n` comma-separated finite numbers, with an optional
    /// trailing comma.
    fn exact(&mut self, n: usize, what: &str) -> Result<Vec<f64>> {
        let line = self
            .lines
            .next()
            .ok_or_else(|| bad(format!("the file ends before {what}")))?;
        self.line_no += 1;
        let at = self.line_no;
        let body = line.trim();
        let body = body.strip_suffix(',').unwrap_or(body);
        let mut values = try_with_capacity(n, "NNet values")?;
        for (i, token) in body.split(',').enumerate() {
            let t = token.trim();
            if i >= n {
                return Err(bad(format!(
                    "line {at}: {what} has more than the {n} values expected"
                )));
            }
            let v = t
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    bad(format!(
                        "line {at}: '{}' in {what} is not a finite number",
                        quote(t)
                    ))
                })?;
            values.push(v);
        }
        if values.len() != n {
            return Err(bad(format!(
                "line {at}: {what} has {} values, expected {n}",
                values.len()
            )));
        }
        Ok(values)
    }

    /// Only blank lines may remain.
    fn finish(mut self) -> Result<()> {
        match self.lines.position(|l| !l.trim().is_empty()) {
            None => Ok(()),
            Some(i) => Err(bad(format!(
                "line {}: unexpected data after the last bias",
                self.line_no + i + 1
            ))),
        }
    }
}

fn count(v: f64, what: &str, max: u64) -> Result<usize> {
    if v.fract() != 0.0 || v < 1.0 || v > max as f64 {
        return Err(bad(format!("{what} {v} is not an integer from 1 to {max}")));
    }
    Ok(v as usize)
}

/// The file's text: a regular file (a FIFO or a device is refused without blocking on it) of
/// at most [`MAX_FILE`] bytes, in UTF-8.
fn read_text(path: &std::path::Path) -> Result<String> {
    let shown = quote(&path.display().to_string());
    let bytes = crate::load::read_whole(path, &shown, MAX_FILE, "NNet")?;
    String::from_utf8(bytes).map_err(|e| {
        bad(format!(
            "{shown}: not UTF-8 text (byte {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Reads an NNet file into a model whose weights are sealed in `ctx`.
pub fn load(ctx: Arc<Context>, path: &std::path::Path) -> Result<Model> {
    let text = read_text(path)?;
    parse(ctx, &text, path)
}

/// Parses NNet text (what [`load`] does after reading the file; the fuzz target's entry).
/// `path` names the model (its file stem).
pub fn parse(ctx: Arc<Context>, text: &str, path: &std::path::Path) -> Result<Model> {
    if text.len() as u64 > MAX_FILE {
        return Err(bad(format!(
            "{} bytes; NNet files of at most {MAX_FILE} bytes are read",
            text.len()
        )));
    }
    let mut nums = Numbers::new(text);
    let header = nums.exact(4, "the header (layers, inputs, outputs, max layer size)")?;
    // Two nodes per layer (linear, ReLU) after the input and its normalisation.
    let max_layers = (MAX_NODES as u64 - 2) / 2;
    let layers = count(header[0], "layer count", max_layers)?;
    let inputs = count(header[1], "input count", MAX_NODE_SIZE)?;
    let outputs = count(header[2], "output count", MAX_NODE_SIZE)?;
    let max_size = count(header[3], "max layer size", MAX_NODE_SIZE)?;
    let sizes: Vec<usize> = nums
        .exact(layers + 1, "the layer sizes")?
        .iter()
        .map(|&v| count(v, "layer size", MAX_NODE_SIZE))
        .collect::<Result<_>>()?;
    if sizes.first() != Some(&inputs) {
        return Err(bad("the first layer size is not the header's input count"));
    }
    if sizes.last() != Some(&outputs) {
        return Err(bad("the last layer size is not the header's output count"));
    }
    if sizes.iter().max() != Some(&max_size) {
        return Err(bad(
            "the header's max layer size is not the largest layer size",
        ));
    }
    // Every value takes at least two bytes ("0,"): a file that declares more values than it
    // could hold is refused before anything is allocated for them.
    let declared = sizes
        .windows(2)
        .try_fold(0u64, |acc, w| {
            (w[0] as u64)
                .checked_add(1)
                .and_then(|fan_in| fan_in.checked_mul(w[1] as u64))
                .and_then(|n| acc.checked_add(n))
        })
        .unwrap_or(u64::MAX);
    if declared.saturating_mul(2) > text.len() as u64 {
        return Err(bad(format!(
            "the layer sizes declare {declared} weights and biases, more than a file of {} bytes can hold",
            text.len()
        )));
    }
    let _symmetric = nums.exact(1, "the flag line")?;
    let min = nums.exact(inputs, "input minimums")?;
    let max = nums.exact(inputs, "input maximums")?;
    let mut mean = nums.exact(inputs + 1, "input means (and the output's)")?;
    let mut range = nums.exact(inputs + 1, "input ranges (and the output's)")?;
    // The appended output mean and range de-normalise outputs, which the model does not do.
    mean.truncate(inputs);
    range.truncate(inputs);

    let name = super::name_from_path(path, "nnet");
    let mut b = Builder::new(ctx, name.as_bytes(), &[inputs as u64])?;
    b.add_normalize(PREV, min, max, mean, range)?;
    for l in 0..layers {
        let (fan_in, fan_out) = (sizes[l], sizes[l + 1]);
        let mut weight = try_with_capacity(fan_in * fan_out, "NNet weights")?;
        for r in 0..fan_out {
            let row = nums.exact(fan_in, &format!("layer {l} weight row {r}"))?;
            weight.extend(row.iter().map(|&v| v as f32));
        }
        let mut bias = try_with_capacity(fan_out, "NNet biases")?;
        for r in 0..fan_out {
            bias.push(nums.exact(1, &format!("layer {l} bias {r}"))?[0] as f32);
        }
        if let Some(i) = weight.iter().chain(&bias).position(|v| !v.is_finite()) {
            return Err(bad(format!("layer {l}: value {i} overflows float32")));
        }
        b.add_linear(PREV, fan_out as u64, &weight, Some(&bias))?;
        if l + 1 < layers {
            b.add_elementwise(PREV, Op::Relu)?;
        }
    }
    nums.finish()?;
    b.build()
}
