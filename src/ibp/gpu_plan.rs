//! A model compiled once for its GPU, when the model is built or loaded: each node's launch
//! with its shapes checked and converted, which ReLUs run inside the layer before them, how the
//! nodes' bounds share a workspace, the normalisation constants already in device memory, and
//! (for a dense chain) the linear-bounds layer table with its shared-memory plan. Interval and
//! linear bounds both run from it, so a call does only per-call work.
//!
//! What depends on the weights' *values* is not in the plan: the column maxima that size the
//! linear bounds' rounding charges are computed from the sealed bytes on every call, so a
//! weight changed after the plan was made cannot make a charge too small.

use super::gpu::u32_of;
use super::graph::{Node, Op};
use super::model::Model;
use super::round::gamma;
use crate::backend::Storage;
use crate::backend::cuda::launch::{
    Activation, ConvShape, CrownLayer, CrownTable, Dev, PoolShape, Weights,
};
use crate::backend::cuda::runtime::{DeviceMem, DeviceScope};
use crate::error::{ErrorKind, Result, VramError};

/// One node's launch.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Input,
    /// Constants at `at` bytes into the plan's device constants (min, max, mean, range).
    Normalize {
        at: usize,
        features: u32,
    },
    Linear {
        weight: usize,
        bias: Option<usize>,
        in_f: u32,
        out_f: u32,
        /// Applies the next node's ReLU in its own epilogue.
        relu: bool,
    },
    /// A ReLU that the layer before it applies.
    FusedRelu,
    Activation(Activation),
    Add {
        other: usize,
    },
    Conv {
        weight: usize,
        bias: Option<usize>,
        shape: ConvShape,
        relu: bool,
    },
    Pool {
        is_max: bool,
        shape: PoolShape,
    },
    BatchNorm {
        params: usize,
        eps: f64,
        channels: u32,
        per_channel: u32,
    },
}

pub struct GpuPlan {
    steps: Vec<Step>,
    /// Per node: the workspace part that holds its bounds (a fused ReLU shares its layer's).
    part_of: Vec<usize>,
    /// Per part: values per item.
    part_size: Vec<u64>,
    /// Every normalisation node's constants, f64.
    consts: Option<DeviceMem>,
    /// The linear-bounds table, or why the model has none (not a dense chain, too wide).
    crown: Result<CrownTable>,
    /// The chain's input normalisations: constants' byte offset and features.
    crown_prefix: Vec<(usize, u32)>,
}

/// Whether node `k` (linear or conv2d) can apply the ReLU of node `k + 1` in its own epilogue:
/// the ReLU is its only consumer, so nothing else reads the pre-activation bounds.
fn relu_fuses_into(nodes: &[Node], k: usize) -> bool {
    k + 1 < nodes.len()
        && matches!(nodes[k].op, Op::Linear { .. } | Op::Conv2d { .. })
        && matches!(nodes[k + 1].op, Op::Relu)
        && nodes[k + 1].input == k
        && !nodes.iter().enumerate().any(|(j, n)| {
            j != k + 1
                && ((j > k && n.input == k) || matches!(n.op, Op::Add { other } if other == k))
        })
}

/// The sealed parameter `i` of `model` where it lives on the GPU.
pub fn param(model: &Model, i: usize) -> Result<Dev<'_, f32>> {
    match model.params().get(i).map(|s| s.storage()) {
        Some(Storage::Cuda(buf)) => buf.floats(),
        _ => Err(VramError::new(
            ErrorKind::Unsupported,
            "model: a weight is not in GPU memory",
        )),
    }
}

/// A layer's weight and optional bias.
pub fn weights(model: &Model, weight: usize, bias: Option<usize>) -> Result<Weights<'_>> {
    Ok(Weights {
        w: param(model, weight)?,
        bias: bias.map(|b| param(model, b)).transpose()?,
    })
}

impl GpuPlan {
    /// The plan of `model`, whose parameters live on GPU `device`.
    pub fn new(model: &Model, device: i32) -> Result<Self> {
        let _scope = DeviceScope::enter(device)?;
        let nodes = model.nodes();
        let mut consts: Vec<u8> = Vec::new();
        let mut steps = Vec::with_capacity(nodes.len());
        for (k, node) in nodes.iter().enumerate() {
            let fused_before = k > 0 && relu_fuses_into(nodes, k - 1);
            steps.push(step(nodes, k, node, fused_before, &mut consts)?);
        }
        let (mut part_of, mut part_size) = (Vec::with_capacity(nodes.len()), Vec::new());
        for (k, node) in nodes.iter().enumerate() {
            if matches!(steps[k], Step::FusedRelu) {
                part_of.push(part_of[k - 1]);
            } else {
                part_of.push(part_size.len());
                part_size.push(node.size());
            }
        }
        let consts = if consts.is_empty() {
            None
        } else {
            Some(DeviceMem::new(
                device,
                consts.len(),
                &consts,
                "IBP normalisation constants",
            )?)
        };
        let crown = model.chain().and_then(|chain| {
            let layers = chain
                .layers
                .iter()
                .map(|l| {
                    Ok(CrownLayer {
                        p: weights(model, l.weight, l.bias)?,
                        in_f: l.in_f,
                        out_f: l.out_f,
                        relu: l.relu,
                        gamma: gamma(u64::from(l.out_f) + 2) * (1.0 + 1e-9),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let n_in = u32_of(chain.n_in as u64, "input size")?;
            // SAFETY: the weights are the model's sealed shards, which the model owns for as
            // long as it owns this plan (the plan is dropped first).
            unsafe { CrownTable::new(device, &layers, n_in) }
        });
        let crown_prefix = model.chain().map_or_else(
            |_| Vec::new(),
            |chain| {
                chain
                    .prefix()
                    .iter()
                    .filter_map(|&k| match steps.get(k) {
                        Some(Step::Normalize { at, features }) => Some((*at, *features)),
                        _ => None, // a flatten: the same values
                    })
                    .collect()
            },
        );
        Ok(Self {
            crown_prefix,
            steps,
            part_of,
            part_size,
            consts,
            crown,
        })
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The workspace part of node `k`.
    pub fn part_of(&self, k: usize) -> Option<usize> {
        self.part_of.get(k).copied()
    }

    /// Values per item of each workspace part.
    pub fn part_sizes(&self) -> &[u64] {
        &self.part_size
    }

    /// `len` normalisation constants at byte `at`.
    pub fn consts(&self, at: usize, len: usize) -> Result<Dev<'_, f64>> {
        self.consts
            .as_ref()
            .ok_or_else(|| VramError::invalid("model", "no normalisation constants"))?
            .view(at, len)
    }

    /// The normalisations a dense chain applies to its input before its first layer
    /// (constants' byte offset, features), in order.
    pub fn crown_prefix(&self) -> &[(usize, u32)] {
        &self.crown_prefix
    }

    /// The linear-bounds table, or why there is none.
    pub fn crown(&self) -> Result<&CrownTable> {
        self.crown.as_ref().map_err(Clone::clone)
    }
}

/// The launch of node `k`; normalisation constants are appended to `consts`.
fn step(
    nodes: &[Node],
    k: usize,
    node: &Node,
    fused_before: bool,
    consts: &mut Vec<u8>,
) -> Result<Step> {
    let input_shape = || {
        nodes
            .get(node.input)
            .map(|n| &n.shape)
            .ok_or_else(|| VramError::invalid("model", "dangling node input"))
    };
    Ok(match &node.op {
        Op::Input => Step::Input,
        Op::Normalize {
            min,
            max,
            mean,
            range,
        } => {
            let at = consts.len();
            for v in [min, max, mean, range] {
                consts.extend(v.iter().flat_map(|x| x.to_ne_bytes()));
            }
            Step::Normalize {
                at,
                features: u32_of(min.len() as u64, "normalisation")?,
            }
        }
        Op::Linear {
            in_features,
            out_features,
            weight,
            bias,
        } => Step::Linear {
            weight: *weight,
            bias: *bias,
            in_f: u32_of(*in_features, "in_features")?,
            out_f: u32_of(*out_features, "out_features")?,
            relu: relu_fuses_into(nodes, k),
        },
        Op::Relu if fused_before => Step::FusedRelu,
        Op::Relu => Step::Activation(Activation::Relu),
        Op::LeakyRelu { alpha } => Step::Activation(Activation::LeakyRelu(f64::from(*alpha))),
        Op::Sigmoid => Step::Activation(Activation::Sigmoid),
        Op::Tanh => Step::Activation(Activation::Tanh),
        Op::Flatten => Step::Activation(Activation::Copy),
        Op::Add { other } => Step::Add { other: *other },
        Op::Conv2d { conv, weight, bias } => {
            let ins = input_shape()?;
            let dims = [
                ins[0],
                ins[1],
                ins[2],
                conv.cout,
                node.shape[1],
                node.shape[2],
                conv.kh,
                conv.kw,
                conv.stride[0],
                conv.stride[1],
                conv.padding[0],
                conv.padding[1],
                conv.dilation[0],
                conv.dilation[1],
                conv.groups,
            ];
            let mut shape = [0u32; 15];
            for (s, &d) in shape.iter_mut().zip(&dims) {
                *s = u32_of(d, "conv2d shape")?;
            }
            Step::Conv {
                weight: *weight,
                bias: *bias,
                shape: ConvShape(shape),
                relu: relu_fuses_into(nodes, k),
            }
        }
        Op::AvgPool2d(p) | Op::MaxPool2d(p) => {
            let ins = input_shape()?;
            let dims = [
                ins[0],
                ins[1],
                ins[2],
                node.shape[1],
                node.shape[2],
                p.kernel[0],
                p.kernel[1],
                p.stride[0],
                p.stride[1],
                p.padding[0],
                p.padding[1],
            ];
            let mut shape = [0u32; 11];
            for (s, &d) in shape.iter_mut().zip(&dims) {
                *s = u32_of(d, "pool shape")?;
            }
            Step::Pool {
                is_max: matches!(node.op, Op::MaxPool2d(_)),
                shape: PoolShape(shape),
            }
        }
        Op::BatchNorm { params, eps } => Step::BatchNorm {
            params: *params,
            eps: *eps,
            channels: u32_of(node.shape[0], "channels")?,
            per_channel: u32_of(node.size() / node.shape[0].max(1), "batchnorm size")?,
        },
    })
}
