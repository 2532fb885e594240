//! A network seen as a chain of dense layers — element-wise input nodes (normalisation,
//! flatten), then linear layers each optionally followed by a ReLU — the form the GPU
//! linear-bounds kernel (cuda/crown.cu) runs. Worked out once per model ([`Model::chain`]).
//!
//! [`Model::chain`]: super::Model::chain

use super::graph::{Node, Op};
use crate::error::{ErrorKind, Result, VramError};

/// One linear layer of the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// Parameter indices of the weight (`out_f × in_f`, row-major) and the bias.
    pub weight: usize,
    pub bias: Option<usize>,
    pub in_f: u32,
    pub out_f: u32,
    /// A ReLU follows (never on the last layer: the chain ends with a linear layer).
    pub relu: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    /// Element-wise nodes before the first linear layer, applied to the box itself on the
    /// device (they are monotone per element, so the image of a box is the box of its
    /// corners' images; the device plan holds their constants).
    prefix: Vec<usize>,
    pub layers: Vec<Layer>,
    /// Input size of the first layer.
    pub n_in: usize,
}

/// Linear bounds of a batch of boxes (from the GPU kernel).
#[derive(Debug, Clone, Default)]
pub struct LinearBatch {
    /// `batch × rows`: a lower bound of each row times the output.
    pub lower: Vec<f64>,
    /// `batch × output size`: sound output bounds (IBP over the tightened intermediate bounds).
    pub out_lo: Vec<f64>,
    pub out_hi: Vec<f64>,
    /// `batch × rows × input size` when asked for (empty otherwise): the linear bound's
    /// coefficients on the network's input.
    pub coeffs: Vec<f64>,
    /// `batch × rows`, with the coefficients: the linear bound's constant, so that
    /// `row·y ≥ coeffs·x + offset` at every point `x` of the box (`-∞` where an input clip
    /// acts on the box, which makes the bound not affine in `x`).
    pub offsets: Vec<f64>,
}

fn unsupported(k: usize, what: &str) -> VramError {
    VramError::new(
        ErrorKind::Unsupported,
        format!(
            "model: node {k} ({what}) is outside what the GPU linear bounds run (a chain of \
             linear layers, each optionally followed by ReLU, after input normalisation)"
        ),
    )
}

impl Chain {
    /// The chain form of `nodes`, or `Unsupported` naming the first node that does not fit.
    pub fn of(nodes: &[Node]) -> Result<Self> {
        let mut prefix = Vec::new();
        let mut layers: Vec<Layer> = Vec::new();
        for (k, node) in nodes.iter().enumerate().skip(1) {
            if node.input + 1 != k {
                return Err(unsupported(k, "an input other than the node before it"));
            }
            match &node.op {
                Op::Normalize { .. } | Op::Flatten if layers.is_empty() => prefix.push(k),
                Op::Flatten => {}
                Op::Linear {
                    in_features,
                    out_features,
                    weight,
                    bias,
                } => {
                    let (in_f, out_f) = (
                        u32::try_from(*in_features).map_err(|_| unsupported(k, "too wide"))?,
                        u32::try_from(*out_features).map_err(|_| unsupported(k, "too wide"))?,
                    );
                    layers.push(Layer {
                        weight: *weight,
                        bias: *bias,
                        in_f,
                        out_f,
                        relu: false,
                    });
                }
                Op::Relu => match layers.last_mut() {
                    Some(l) if !l.relu && matches!(nodes[k - 1].op, Op::Linear { .. }) => {
                        l.relu = true;
                    }
                    _ => return Err(unsupported(k, "a ReLU not right after a linear layer")),
                },
                _ => return Err(unsupported(k, node.kind())),
            }
        }
        match (layers.first(), layers.last()) {
            (Some(first), Some(last)) if !last.relu => Ok(Self {
                prefix,
                n_in: first.in_f as usize,
                layers,
            }),
            (None, _) => Err(unsupported(nodes.len(), "no linear layer")),
            _ => Err(unsupported(
                nodes.len().saturating_sub(1),
                "a ReLU on the output",
            )),
        }
    }

    /// The element-wise nodes before the first linear layer (normalisation, flatten).
    pub fn prefix(&self) -> &[usize] {
        &self.prefix
    }

    /// Outputs of the last layer.
    pub fn n_out(&self) -> usize {
        self.layers.last().map_or(0, |l| l.out_f as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: Op, input: usize, size: u64) -> Node {
        Node {
            op,
            input,
            shape: vec![size],
        }
    }

    fn linear(i: u64, o: u64, w: usize) -> Op {
        Op::Linear {
            in_features: i,
            out_features: o,
            weight: w,
            bias: Some(w + 1),
        }
    }

    #[test]
    fn dense_relu_chain_with_normalisation() {
        let norm = Op::Normalize {
            min: vec![0.0; 2],
            max: vec![1.0; 2],
            mean: vec![0.5; 2],
            range: vec![2.0; 2],
        };
        let nodes = vec![
            node(Op::Input, 0, 2),
            node(norm, 0, 2),
            node(linear(2, 3, 0), 1, 3),
            node(Op::Relu, 2, 3),
            node(linear(3, 1, 2), 3, 1),
        ];
        let c = Chain::of(&nodes).unwrap();
        assert_eq!(c.layers.len(), 2);
        assert!(c.layers[0].relu && !c.layers[1].relu);
        assert_eq!((c.n_in, c.n_out()), (2, 1));
        assert_eq!(c.prefix(), &[1]);
    }

    #[test]
    fn other_graphs_are_refused_by_node() {
        let nodes = vec![
            node(Op::Input, 0, 2),
            node(linear(2, 2, 0), 0, 2),
            node(Op::Sigmoid, 1, 2),
            node(linear(2, 1, 2), 2, 1),
        ];
        let e = Chain::of(&nodes).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(e.to_string().contains("node 2 (sigmoid)"), "{e}");
        let relu_out = vec![
            node(Op::Input, 0, 2),
            node(linear(2, 2, 0), 0, 2),
            node(Op::Relu, 1, 2),
        ];
        assert!(Chain::of(&relu_out).is_err());
        assert!(Chain::of(&nodes[..1]).is_err());
    }
}
