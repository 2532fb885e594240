//! The NNet text format (Kyle Julian, Stanford 2016; the ACAS Xu networks): `//` comments, a
//! header `layers,inputs,outputs,max_layer_size`, the layer sizes, a flag line, input minimums,
//! maximums, means and ranges (the last two with the output's appended), then per layer its
//! weight rows followed by its biases. Hidden layers are followed by ReLU, the last is not.
//!
//! The model starts with the file's input clipping and normalisation, so callers pass
//! physical inputs; its outputs are the network's own (not de-normalised), the convention of
//! the VNN-COMP properties.

use std::sync::Arc;

use super::builder::{Builder, PREV};
use super::graph::Op;
use super::model::Model;
use crate::context::Context;
use crate::error::{Result, VramError};

/// Largest NNet file accepted (the ACAS Xu files are ~100 KB).
const MAX_FILE: u64 = 1 << 30;

struct Numbers<'a> {
    lines: std::iter::Peekable<std::str::Lines<'a>>,
    line_no: usize,
}

impl<'a> Numbers<'a> {
    fn new(text: &'a str) -> Self {
        let mut lines = text.lines().peekable();
        let mut line_no = 0;
        while lines
            .peek()
            .is_some_and(|l| l.trim_start().starts_with("//"))
        {
            lines.next();
            line_no += 1;
        }
        Self { lines, line_no }
    }

    fn line(&mut self, what: &str) -> Result<Vec<f64>> {
        let line = self
            .lines
            .next()
            .ok_or_else(|| VramError::invalid("path", format!("ends before {what}")))?;
        self.line_no += 1;
        line.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| {
                t.parse::<f64>().map_err(|_| {
                    VramError::invalid(
                        "path",
                        format!("line {}: '{t}' in {what} is not a number", self.line_no),
                    )
                })
            })
            .collect()
    }

    fn exact(&mut self, n: usize, what: &str) -> Result<Vec<f64>> {
        let v = self.line(what)?;
        if v.len() < n {
            return Err(VramError::invalid(
                "path",
                format!(
                    "line {}: {what} has {} values, expected {n}",
                    self.line_no,
                    v.len()
                ),
            ));
        }
        Ok(v[..n].to_vec())
    }
}

fn count(v: f64, what: &str) -> Result<usize> {
    if v.fract() != 0.0 || !(1.0..=1e7).contains(&v) {
        return Err(VramError::invalid(
            "path",
            format!("{what} {v} is not a positive integer"),
        ));
    }
    Ok(v as usize)
}

/// Reads an NNet file into a model whose weights are sealed in `ctx`.
pub fn load(ctx: Arc<Context>, path: &std::path::Path) -> Result<Model> {
    let meta = std::fs::metadata(path)
        .map_err(|e| VramError::invalid("path", format!("{}: {e}", path.display())))?;
    if meta.len() > MAX_FILE {
        return Err(VramError::invalid("path", "file is larger than 1 GiB"));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| VramError::invalid("path", format!("{}: {e}", path.display())))?;
    let mut nums = Numbers::new(&text);
    let header = nums.exact(3, "the header")?;
    let layers = count(header[0], "layer count")?;
    let inputs = count(header[1], "input count")?;
    let sizes: Vec<usize> = nums
        .exact(layers + 1, "the layer sizes")?
        .iter()
        .map(|&v| count(v, "layer size"))
        .collect::<Result<_>>()?;
    if sizes.first() != Some(&inputs) {
        return Err(VramError::invalid(
            "path",
            "the first layer size is not the input count",
        ));
    }
    let _flag = nums.line("the flag line")?;
    let min = nums.exact(inputs, "input minimums")?;
    let max = nums.exact(inputs, "input maximums")?;
    let mean = nums.exact(inputs, "input means")?;
    let range = nums.exact(inputs, "input ranges")?;

    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("nnet");
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect();
    let mut b = Builder::new(ctx, name.as_bytes(), &[inputs as u64])?;
    b.add_normalize(min, max, mean, range)?;
    for l in 0..layers {
        let (fan_in, fan_out) = (sizes[l], sizes[l + 1]);
        let mut weight = Vec::with_capacity(fan_in * fan_out);
        for r in 0..fan_out {
            let row = nums.exact(fan_in, &format!("layer {l} weight row {r}"))?;
            weight.extend(row.iter().map(|&v| v as f32));
        }
        let mut bias = Vec::with_capacity(fan_out);
        for r in 0..fan_out {
            bias.push(nums.exact(1, &format!("layer {l} bias {r}"))?[0] as f32);
        }
        b.add_linear(PREV, fan_out as u64, &weight, Some(&bias))?;
        if l + 1 < layers {
            b.add_elementwise(PREV, Op::Relu)?;
        }
    }
    b.build()
}
