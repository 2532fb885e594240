//! Building a network layer by layer. Each layer's parameters are sealed into the context's
//! backend as soon as the layer is added (`<model>/<node>/weight`, `…/bias`, `…/params`), so
//! the caller's buffers are free to go when the call returns.

use std::sync::Arc;

use super::f32_bytes;
use super::graph::{Conv2d, MAX_NODE_SIZE, Node, Op, Pool2d, check_size, out_extent, shape_size};
use super::model::Model;
use crate::context::Context;
use crate::error::{ErrorKind, Result, VramError};
use crate::seal::shard_id::{MAX_SHARD_ID_LEN, check_shard_id};
use crate::shard::Shard;

/// `input` value meaning "the previous node".
pub const PREV: u32 = u32::MAX;
/// Room kept in shard ids for the `/<node>/<tensor>` suffix.
const SUFFIX_ROOM: usize = 24;

pub struct Builder {
    ctx: Arc<Context>,
    name: String,
    nodes: Vec<Node>,
    params: Vec<Arc<Shard>>,
}

fn finite(name: &str, v: &[f32]) -> Result<()> {
    match v.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(VramError::invalid(
            name,
            format!("element {i} is {} (weights must be finite)", v[i]),
        )),
        None => Ok(()),
    }
}

impl Builder {
    pub fn new(ctx: Arc<Context>, name: &[u8], input_shape: &[u64]) -> Result<Self> {
        let name = check_shard_id(name)
            .map_err(|e| VramError::invalid("name", e.message.trim_start_matches("shard_id: ")))?;
        if name.len() + SUFFIX_ROOM > MAX_SHARD_ID_LEN {
            return Err(VramError::invalid(
                "name",
                format!(
                    "is {} bytes; at most {} (it prefixes shard ids)",
                    name.len(),
                    MAX_SHARD_ID_LEN - SUFFIX_ROOM
                ),
            ));
        }
        if input_shape.is_empty() || input_shape.len() > 4 {
            return Err(VramError::invalid(
                "rank",
                "must be 1 to 4 (batch dimension excluded)",
            ));
        }
        check_size(input_shape, "input_shape")?;
        Ok(Self {
            ctx,
            name: name.to_string(),
            nodes: vec![Node {
                op: Op::Input,
                input: 0,
                shape: input_shape.to_vec(),
            }],
            params: Vec::new(),
        })
    }

    fn resolve(&self, input: u32, arg: &str) -> Result<usize> {
        if input == PREV {
            return Ok(self.nodes.len() - 1);
        }
        let i = input as usize;
        if i >= self.nodes.len() {
            return Err(VramError::invalid(
                arg,
                format!(
                    "node {i} does not exist yet ({} nodes so far)",
                    self.nodes.len()
                ),
            ));
        }
        Ok(i)
    }

    fn seal_param(&mut self, tensor: &str, values: &[f32]) -> Result<usize> {
        let id = format!("{}/{}/{tensor}", self.name, self.nodes.len());
        let shard = self.ctx.seal(id.as_bytes(), &f32_bytes(values), None)?;
        self.params.push(Arc::new(shard));
        Ok(self.params.len() - 1)
    }

    fn push(&mut self, op: Op, input: usize, shape: Vec<u64>) -> Result<u32> {
        check_size(&shape, "output shape")?;
        self.nodes.push(Node { op, input, shape });
        Ok((self.nodes.len() - 1) as u32)
    }

    /// The flattened size of node `input` (for sizing a linear layer's weight from C).
    pub fn input_features(&self, input: u32) -> Result<u64> {
        Ok(shape_size(self.shape(self.resolve(input, "input")?)))
    }

    /// The shape of node `input`.
    pub fn input_shape(&self, input: u32) -> Result<&[u64]> {
        Ok(self.shape(self.resolve(input, "input")?))
    }

    fn shape(&self, i: usize) -> &[u64] {
        &self.nodes[i].shape
    }

    pub fn add_linear(
        &mut self,
        input: u32,
        out_features: u64,
        weight: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<u32> {
        let input = self.resolve(input, "input")?;
        let in_features = shape_size(self.shape(input));
        if out_features == 0 || out_features > MAX_NODE_SIZE {
            return Err(VramError::invalid(
                "out_features",
                format!("{out_features} is out of range"),
            ));
        }
        if weight.len() as u64 != out_features * in_features {
            return Err(VramError::invalid(
                "weight",
                "length is not out_features × in_features",
            ));
        }
        finite("weight", weight)?;
        if let Some(b) = bias {
            if b.len() as u64 != out_features {
                return Err(VramError::invalid("bias", "length is not out_features"));
            }
            finite("bias", b)?;
        }
        let weight = self.seal_param("weight", weight)?;
        let bias = bias.map(|b| self.seal_param("bias", b)).transpose()?;
        self.push(
            Op::Linear {
                in_features,
                out_features,
                weight,
                bias,
            },
            input,
            vec![out_features],
        )
    }

    pub fn add_conv2d(
        &mut self,
        input: u32,
        conv: Conv2d,
        weight: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<u32> {
        let input = self.resolve(input, "input")?;
        let s = self.shape(input).to_vec();
        let [cin, h, w] = s[..] else {
            return Err(VramError::invalid(
                "input",
                format!("conv2d needs a [C, H, W] input, got {s:?}"),
            ));
        };
        let conv = Conv2d { cin, ..conv };
        let g = conv.groups;
        if g == 0 || cin % g != 0 || conv.cout == 0 || conv.cout % g != 0 {
            return Err(VramError::invalid(
                "params",
                "groups must divide both in and out channels (all ≥ 1)",
            ));
        }
        let oh = out_extent(
            h,
            conv.kh,
            conv.stride[0],
            conv.padding[0],
            conv.dilation[0],
            "params (height)",
        )?;
        let ow = out_extent(
            w,
            conv.kw,
            conv.stride[1],
            conv.padding[1],
            conv.dilation[1],
            "params (width)",
        )?;
        let expected = conv.cout * (cin / g) * conv.kh * conv.kw;
        if weight.len() as u64 != expected {
            return Err(VramError::invalid(
                "weight",
                format!(
                    "length {} is not cout × cin/groups × kh × kw = {expected}",
                    weight.len()
                ),
            ));
        }
        finite("weight", weight)?;
        if let Some(b) = bias {
            if b.len() as u64 != conv.cout {
                return Err(VramError::invalid(
                    "bias",
                    "length is not the number of out channels",
                ));
            }
            finite("bias", b)?;
        }
        let weight = self.seal_param("weight", weight)?;
        let bias = bias.map(|b| self.seal_param("bias", b)).transpose()?;
        self.push(
            Op::Conv2d { conv, weight, bias },
            input,
            vec![conv.cout, oh, ow],
        )
    }

    /// Element-wise operations keep their input's shape.
    pub fn add_elementwise(&mut self, input: u32, op: Op) -> Result<u32> {
        let input = self.resolve(input, "input")?;
        if let Op::LeakyRelu { alpha } = op {
            if !alpha.is_finite() || alpha < 0.0 {
                return Err(VramError::invalid(
                    "alpha",
                    format!("{alpha} must be finite and ≥ 0 (monotone)"),
                ));
            }
        }
        let shape = self.shape(input).to_vec();
        self.push(op, input, shape)
    }

    pub fn add_flatten(&mut self, input: u32) -> Result<u32> {
        let input = self.resolve(input, "input")?;
        let n = shape_size(self.shape(input));
        self.push(Op::Flatten, input, vec![n])
    }

    pub fn add_add(&mut self, input: u32, other: u32) -> Result<u32> {
        let input = self.resolve(input, "input")?;
        let other = self.resolve(other, "other")?;
        if self.shape(input) != self.shape(other) {
            return Err(VramError::invalid(
                "other",
                format!(
                    "shape {:?} differs from the input's {:?}",
                    self.shape(other),
                    self.shape(input)
                ),
            ));
        }
        let shape = self.shape(input).to_vec();
        self.push(Op::Add { other }, input, shape)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn add_batchnorm(
        &mut self,
        input: u32,
        gamma: &[f32],
        beta: &[f32],
        mean: &[f32],
        var: &[f32],
        eps: f64,
    ) -> Result<u32> {
        let input = self.resolve(input, "input")?;
        let c = self.shape(input).first().copied().unwrap_or(0) as usize;
        for (name, v) in [
            ("gamma", gamma),
            ("beta", beta),
            ("mean", mean),
            ("var", var),
        ] {
            if v.len() != c {
                return Err(VramError::invalid(
                    name,
                    format!("length must be the channel count {c}"),
                ));
            }
            finite(name, v)?;
        }
        if let Some(i) = var.iter().position(|&v| v < 0.0) {
            return Err(VramError::invalid(
                "var",
                format!("element {i} is negative"),
            ));
        }
        if !(eps.is_finite() && eps > 0.0) {
            return Err(VramError::invalid("eps", "must be finite and > 0"));
        }
        let all: Vec<f32> = [gamma, beta, mean, var].concat();
        let params = self.seal_param("params", &all)?;
        let shape = self.shape(input).to_vec();
        self.push(Op::BatchNorm { params, eps }, input, shape)
    }

    pub fn add_pool2d(&mut self, input: u32, pool: Pool2d, max: bool) -> Result<u32> {
        let input = self.resolve(input, "input")?;
        let s = self.shape(input).to_vec();
        let [c, h, w] = s[..] else {
            return Err(VramError::invalid(
                "input",
                format!("pooling needs a [C, H, W] input, got {s:?}"),
            ));
        };
        for a in 0..2 {
            if pool.padding[a] * 2 > pool.kernel[a] {
                return Err(VramError::invalid(
                    "params",
                    "padding must be at most half the kernel",
                ));
            }
        }
        let oh = out_extent(
            h,
            pool.kernel[0],
            pool.stride[0],
            pool.padding[0],
            1,
            "params (height)",
        )?;
        let ow = out_extent(
            w,
            pool.kernel[1],
            pool.stride[1],
            pool.padding[1],
            1,
            "params (width)",
        )?;
        let op = if max {
            Op::MaxPool2d(pool)
        } else {
            Op::AvgPool2d(pool)
        };
        self.push(op, input, vec![c, oh, ow])
    }

    /// Input clipping and normalisation (NNet files).
    pub fn add_normalize(
        &mut self,
        min: Vec<f64>,
        max: Vec<f64>,
        mean: Vec<f64>,
        range: Vec<f64>,
    ) -> Result<u32> {
        let input = self.nodes.len() - 1;
        let n = shape_size(self.shape(input)) as usize;
        if [min.len(), max.len(), mean.len(), range.len()]
            .iter()
            .any(|&l| l != n)
        {
            return Err(VramError::invalid(
                "normalisation",
                "one value per input is needed",
            ));
        }
        for i in 0..n {
            let ok =
                min[i] <= max[i] && range[i] > 0.0 && mean[i].is_finite() && range[i].is_finite();
            if !ok {
                return Err(VramError::invalid(
                    "normalisation",
                    format!("input {i}: need min ≤ max and a finite range > 0"),
                ));
            }
        }
        let shape = self.shape(input).to_vec();
        self.push(
            Op::Normalize {
                min,
                max,
                mean,
                range,
            },
            input,
            shape,
        )
    }

    pub fn build(self) -> Result<Model> {
        if self.nodes.len() < 2 {
            return Err(VramError::new(
                ErrorKind::InvalidArgument,
                "builder: the network has no layers",
            ));
        }
        Model::new(self.ctx, self.name, self.nodes, self.params)
    }
}
