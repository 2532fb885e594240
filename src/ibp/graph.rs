//! The network IR: nodes in topological order (each refers only to earlier nodes), each with
//! the shape of its output (batch dimension excluded).

/// Hyper-parameters of a 2-D convolution (NCHW, weight `[cout, cin / groups, kh, kw]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2d {
    pub cin: u64,
    pub cout: u64,
    pub kh: u64,
    pub kw: u64,
    pub stride: [u64; 2],
    pub padding: [u64; 2],
    pub dilation: [u64; 2],
    pub groups: u64,
}

/// A 2-D pooling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2d {
    pub kernel: [u64; 2],
    pub stride: [u64; 2],
    pub padding: [u64; 2],
}

/// What a node computes. Weight-bearing nodes refer to tensors by index into the model's
/// parameter list (sealed shards).
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Input,
    /// Clip each input to [min, max], then (x − mean) / range (the NNet input normalisation).
    Normalize {
        min: Vec<f64>,
        max: Vec<f64>,
        mean: Vec<f64>,
        range: Vec<f64>,
    },
    Linear {
        in_features: u64,
        out_features: u64,
        weight: usize,
        bias: Option<usize>,
    },
    Conv2d {
        conv: Conv2d,
        weight: usize,
        bias: Option<usize>,
    },
    Relu,
    LeakyRelu {
        alpha: f32,
    },
    Sigmoid,
    Tanh,
    Flatten,
    Add {
        other: usize,
    },
    /// Inference batch norm per channel: (x − mean) / sqrt(var + eps) · gamma + beta.
    BatchNorm {
        params: usize,
        eps: f64,
    },
    AvgPool2d(Pool2d),
    MaxPool2d(Pool2d),
}

/// One node: its operation, its (first) input, and its output shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub op: Op,
    pub input: usize,
    pub shape: Vec<u64>,
}

impl Node {
    pub fn size(&self) -> u64 {
        shape_size(&self.shape)
    }

    /// Short name of the operation, for messages and shard names.
    pub fn kind(&self) -> &'static str {
        match self.op {
            Op::Input => "input",
            Op::Normalize { .. } => "normalize",
            Op::Linear { .. } => "linear",
            Op::Conv2d { .. } => "conv2d",
            Op::Relu => "relu",
            Op::LeakyRelu { .. } => "leaky_relu",
            Op::Sigmoid => "sigmoid",
            Op::Tanh => "tanh",
            Op::Flatten => "flatten",
            Op::Add { .. } => "add",
            Op::BatchNorm { .. } => "batchnorm",
            Op::AvgPool2d(_) => "avgpool2d",
            Op::MaxPool2d(_) => "maxpool2d",
        }
    }
}

pub fn shape_size(shape: &[u64]) -> u64 {
    shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .unwrap_or(u64::MAX)
}
