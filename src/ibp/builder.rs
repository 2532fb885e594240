//! Building a network layer by layer. Each layer's parameters are sealed into the context's
//! backend as soon as the layer is added (`<model>/<node>/weight`, `…/bias`, `…/params`), so
//! the caller's buffers are free to go when the call returns.
//!
//! Every add is a transaction: the layer's shape, limits and parameters are all checked
//! (through [`super::limits`]) before anything is sealed, its tensors are sealed together, and
//! the node is committed only when all of that succeeded. A failed add leaves the builder and
//! the context's usage exactly as they were.

use std::sync::Arc;

use super::f32_bytes;
use super::graph::{Conv2d, Node, Op, Pool2d, shape_size};
use super::limits::{self, Axis, MAX_NODE_SIZE, MAX_NODES, check_size, check_work};
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

fn check_len(name: &str, v: &[f32], expected: u64, what: &str) -> Result<()> {
    if v.len() as u64 != expected {
        return Err(VramError::invalid(
            name,
            format!("length {} is not {what} = {expected}", v.len()),
        ));
    }
    finite(name, v)
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

    /// Checks a new node's output shape and that the network has room for it.
    fn check_node(&self, shape: &[u64]) -> Result<()> {
        if self.nodes.len() >= MAX_NODES {
            return Err(VramError::invalid(
                "b",
                format!("the network already has the maximum of {MAX_NODES} nodes"),
            ));
        }
        check_size(shape, "output shape").map(|_| ())
    }

    /// Seals the tensors of the next node (all or none: a failure drops those already sealed,
    /// which returns their bytes and ids to the context).
    fn seal_params(&self, tensors: &[(&str, &[f32])]) -> Result<Vec<Arc<Shard>>> {
        let node = self.nodes.len();
        let mut sealed = Vec::with_capacity(tensors.len());
        for (tensor, values) in tensors {
            let id = format!("{}/{node}/{tensor}", self.name);
            sealed.push(Arc::new(self.ctx.seal(
                id.as_bytes(),
                f32_bytes(values),
                None,
            )?));
        }
        Ok(sealed)
    }

    /// Appends a checked node whose sealed tensors are `sealed`; `op` receives their indices in
    /// the model's parameter list.
    fn commit(
        &mut self,
        sealed: Vec<Arc<Shard>>,
        op: impl FnOnce(&[usize]) -> Op,
        input: usize,
        shape: Vec<u64>,
    ) -> u32 {
        let first = self.params.len();
        let indices: Vec<usize> = (first..first + sealed.len()).collect();
        self.params.extend(sealed);
        self.nodes.push(Node {
            op: op(&indices),
            input,
            shape,
        });
        (self.nodes.len() - 1) as u32
    }

    /// Seals a checked layer's weight and optional bias together and commits its node; `op`
    /// receives their indices.
    fn commit_weighted(
        &mut self,
        weight: &[f32],
        bias: Option<&[f32]>,
        op: impl FnOnce(usize, Option<usize>) -> Op,
        input: usize,
        shape: Vec<u64>,
    ) -> Result<u32> {
        let mut tensors = vec![("weight", weight)];
        tensors.extend(bias.map(|b| ("bias", b)));
        let sealed = self.seal_params(&tensors)?;
        let has_bias = bias.is_some();
        Ok(self.commit(sealed, |p| op(p[0], has_bias.then(|| p[1])), input, shape))
    }

    /// Appends a node with no tensors.
    fn push(&mut self, op: Op, input: usize, shape: Vec<u64>) -> Result<u32> {
        self.check_node(&shape)?;
        Ok(self.commit(Vec::new(), |_| op, input, shape))
    }

    /// How many nodes the network has so far (the input included).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The shape of node `input`.
    pub fn input_shape(&self, input: u32) -> Result<&[u64]> {
        Ok(self.shape(self.resolve(input, "input")?))
    }

    fn shape(&self, i: usize) -> &[u64] {
        self.nodes.get(i).map_or(&[], |n| &n.shape)
    }

    /// Checks a linear layer of `out_features` fed by node `input` and returns its weight's
    /// length (`out_features × in_features`), before any weight is read.
    pub fn linear_weight_len(&self, input: u32, out_features: u64) -> Result<u64> {
        let input = self.resolve(input, "input")?;
        self.plan_linear(input, out_features)
    }

    fn plan_linear(&self, input: usize, out_features: u64) -> Result<u64> {
        let in_features = shape_size(self.shape(input));
        if out_features == 0 || out_features > MAX_NODE_SIZE {
            return Err(VramError::invalid(
                "out_features",
                format!("{out_features} is out of range (1 to {MAX_NODE_SIZE})"),
            ));
        }
        check_work(&[out_features, in_features], "out_features")?;
        self.check_node(&[out_features])?;
        Ok(out_features * in_features)
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
        let weight_len = self.plan_linear(input, out_features)?;
        check_len("weight", weight, weight_len, "out_features × in_features")?;
        if let Some(b) = bias {
            check_len("bias", b, out_features, "out_features")?;
        }
        self.commit_weighted(
            weight,
            bias,
            |weight, bias| Op::Linear {
                in_features,
                out_features,
                weight,
                bias,
            },
            input,
            vec![out_features],
        )
    }

    /// Checks a convolution fed by node `input` (`conv.cin` is taken from the input) and
    /// returns its weight's length, before any weight is read.
    pub fn conv2d_weight_len(&self, input: u32, conv: Conv2d) -> Result<u64> {
        let input = self.resolve(input, "input")?;
        Ok(self.plan_conv2d(input, conv)?.2)
    }

    /// The convolution with its input channels, its output shape and its weight's length.
    fn plan_conv2d(&self, input: usize, conv: Conv2d) -> Result<(Conv2d, Vec<u64>, u64)> {
        let s = self.shape(input);
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
        let axis = |a: usize, kernel: u64| Axis {
            kernel,
            stride: conv.stride[a],
            padding: conv.padding[a],
            dilation: conv.dilation[a],
        };
        let oh = limits::out_extent(h, axis(0, conv.kh), "params (height)")?;
        let ow = limits::out_extent(w, axis(1, conv.kw), "params (width)")?;
        let shape = vec![conv.cout, oh, ow];
        self.check_node(&shape)?;
        let weight_len = limits::product(&[conv.cout, cin / g, conv.kh, conv.kw], "params")?;
        check_work(&[conv.cout, oh, ow, cin / g, conv.kh, conv.kw], "params")?;
        Ok((conv, shape, weight_len))
    }

    pub fn add_conv2d(
        &mut self,
        input: u32,
        conv: Conv2d,
        weight: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<u32> {
        let input = self.resolve(input, "input")?;
        let (conv, shape, weight_len) = self.plan_conv2d(input, conv)?;
        check_len("weight", weight, weight_len, "cout × cin/groups × kh × kw")?;
        if let Some(b) = bias {
            check_len("bias", b, conv.cout, "the number of out channels")?;
        }
        self.commit_weighted(
            weight,
            bias,
            |weight, bias| Op::Conv2d { conv, weight, bias },
            input,
            shape,
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
        let shape = self.shape(input).to_vec();
        let c = shape.first().copied().unwrap_or(0);
        for (name, v) in [
            ("gamma", gamma),
            ("beta", beta),
            ("mean", mean),
            ("var", var),
        ] {
            check_len(name, v, c, "the channel count")?;
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
        self.check_node(&shape)?;
        let mut all = crate::fallible::try_with_capacity(gamma.len() * 4, "batchnorm parameters")?;
        for v in [gamma, beta, mean, var] {
            all.extend_from_slice(v);
        }
        let sealed = self.seal_params(&[("params", &all)])?;
        Ok(self.commit(
            sealed,
            |p| Op::BatchNorm { params: p[0], eps },
            input,
            shape,
        ))
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
        let axis = |a: usize| Axis {
            kernel: pool.kernel[a],
            stride: pool.stride[a],
            padding: pool.padding[a],
            dilation: 1,
        };
        let oh = limits::out_extent(h, axis(0), "params (height)")?;
        let ow = limits::out_extent(w, axis(1), "params (width)")?;
        for a in 0..2 {
            // Within the window limits checked above, the product cannot overflow.
            if pool.padding[a] * 2 > pool.kernel[a] {
                return Err(VramError::invalid(
                    "params",
                    "padding must be at most half the kernel",
                ));
            }
        }
        check_work(&[c, oh, ow, pool.kernel[0], pool.kernel[1]], "params")?;
        let op = if max {
            Op::MaxPool2d(pool)
        } else {
            Op::AvgPool2d(pool)
        };
        self.push(op, input, vec![c, oh, ow])
    }

    /// Clipping to [min, max] then (x − mean) / range, per element: the NNet input
    /// normalisation, and (with infinite min and max) ONNX's Sub / Div / Add of constants.
    pub fn add_normalize(
        &mut self,
        input: u32,
        min: Vec<f64>,
        max: Vec<f64>,
        mean: Vec<f64>,
        range: Vec<f64>,
    ) -> Result<u32> {
        let input = self.resolve(input, "input")?;
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
