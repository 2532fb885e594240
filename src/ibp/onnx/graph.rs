//! The ONNX graph, node by node, into the builder.

use std::collections::HashMap;
use std::sync::Arc;

use super::proto::{GraphProto, ModelProto, NodeProto, ValueInfoProto};
use super::tensor::{Attrs, Tensor};
use super::{bad, unsupported};
use crate::context::Context;
use crate::error::Result;
use crate::ibp::builder::Builder;
use crate::ibp::graph::{Conv2d, Op, Pool2d, shape_size};
use crate::ibp::model::Model;

/// What an ONNX value name stands for.
#[derive(Clone)]
enum Value {
    Const(Arc<Tensor>),
    /// A builder node; `shape` is the ONNX shape without the batch dimension (same element
    /// count as the node).
    Node {
        id: u32,
        shape: Vec<u64>,
    },
    /// A MatMul / Gemm without bias, not yet added: an Add of a constant that follows it
    /// becomes its bias.
    Linear {
        input: u32,
        weight: Vec<f32>,
        shape: Vec<u64>,
    },
}

struct Importer {
    b: Builder,
    values: HashMap<String, Value>,
    /// Whether values carry a leading batch dimension (the graph input has rank ≥ 2).
    batched: bool,
}

pub(super) fn import(
    ctx: Arc<Context>,
    model: &ModelProto,
    graph: &GraphProto,
    name: &str,
) -> Result<Model> {
    if !graph.sparse_initializer.is_empty() {
        return Err(unsupported("the graph", "a sparse initializer"));
    }
    let mut values = HashMap::new();
    for t in &graph.initializer {
        let what = format!("initializer {:?}", t.name);
        let tensor = Tensor::from_proto(t, &what)?;
        if values
            .insert(t.name.clone(), Value::Const(Arc::new(tensor)))
            .is_some()
        {
            return Err(bad(format!("{what} is given twice")));
        }
    }
    // Initializers may also be listed as graph inputs (older exporters do): the one input
    // that is not an initializer is the network's.
    let inputs: Vec<&ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !values.contains_key(&i.name))
        .collect();
    let [input] = inputs[..] else {
        return Err(unsupported(
            "the graph",
            format!("{} inputs (exactly one is)", inputs.len()),
        ));
    };
    let (shape, batched) = input_shape(input)?;
    let b = Builder::new(ctx, name.as_bytes(), &shape)?;
    values.insert(input.name.clone(), Value::Node { id: 0, shape });
    let mut imp = Importer { b, values, batched };
    for (i, node) in graph.node.iter().enumerate() {
        let what = format!("node {i} ({:?}, {})", node.name, node.op_type);
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(unsupported(
                &what,
                format!("operator domain {:?}", node.domain),
            ));
        }
        if model.functions.iter().any(|f| f.name == node.op_type) {
            return Err(unsupported(&what, "a model-local function"));
        }
        let out = imp.node(node, &what)?;
        let Some(name) = node.output.first() else {
            return Err(bad(format!("{what} has no output")));
        };
        imp.values.insert(name.clone(), out);
    }
    let [output] = &graph.output[..] else {
        return Err(unsupported(
            "the graph",
            format!("{} outputs (exactly one is)", graph.output.len()),
        ));
    };
    let id = imp.node_of(&output.name, "the graph output")?.0;
    let last = imp.b.node_count() - 1;
    if id as usize != last {
        return Err(unsupported(
            "the graph output",
            "an output that is not the last node computed",
        ));
    }
    imp.b.build()
}

/// The network's input shape without the batch dimension, and whether there is one.
fn input_shape(input: &ValueInfoProto) -> Result<(Vec<u64>, bool)> {
    let what = format!("graph input {:?}", input.name);
    let tensor = input
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .ok_or_else(|| unsupported(&what, "a non-tensor input"))?;
    if tensor.elem_type != super::proto::data_type::FLOAT {
        return Err(unsupported(
            &what,
            format!("element type {} (float is)", tensor.elem_type),
        ));
    }
    let dims = tensor
        .shape
        .as_ref()
        .map(|s| s.dim.as_slice())
        .ok_or_else(|| unsupported(&what, "an input of unknown rank"))?;
    let batched = dims.len() >= 2;
    let mut shape = Vec::with_capacity(dims.len());
    for (k, d) in dims.iter().enumerate() {
        match d.dim_value {
            Some(v) if v > 0 => shape.push(v as u64),
            // A symbolic or absent batch dimension.
            _ if k == 0 && batched => shape.push(1),
            _ => {
                return Err(unsupported(
                    &what,
                    format!("dimension {k} that is not a positive number"),
                ));
            }
        }
    }
    if batched {
        if shape.first() != Some(&1) {
            return Err(unsupported(&what, "a batch dimension other than 1"));
        }
        shape.remove(0);
    }
    Ok((shape, batched))
}

/// The element index into `c` (broadcast to `full` by ONNX's rules) of each element of
/// `full`, in row-major order.
fn broadcast_index(c: &[u64], full: &[u64], what: &str) -> Result<Vec<usize>> {
    if c.len() > full.len() {
        return Err(unsupported(what, format!("a constant of shape {c:?} here")));
    }
    let pad = full.len() - c.len();
    let mut strides = vec![0usize; full.len()];
    let mut s = 1usize;
    for k in (0..c.len()).rev() {
        let (cd, fd) = (c[k], full[pad + k]);
        if cd == fd {
            strides[pad + k] = if cd == 1 { 0 } else { s };
        } else if cd != 1 {
            return Err(bad(format!(
                "{what}: a constant of shape {c:?} does not broadcast to {full:?}"
            )));
        }
        s = s.saturating_mul(cd as usize);
    }
    let n = shape_size(full) as usize;
    let mut out = crate::fallible::try_with_capacity(n, "onnx constant")?;
    let mut idx = vec![0u64; full.len()];
    for _ in 0..n {
        out.push(
            idx.iter()
                .zip(&strides)
                .map(|(&i, &st)| i as usize * st)
                .sum(),
        );
        for k in (0..full.len()).rev() {
            idx[k] += 1;
            if idx[k] < full[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    Ok(out)
}

impl Importer {
    fn value(&self, name: &str, what: &str) -> Result<&Value> {
        self.values.get(name).ok_or_else(|| {
            bad(format!(
                "{what}: value {name:?} is not produced by any earlier node"
            ))
        })
    }

    /// Input `k` of `node`, which must be present.
    fn arg<'n>(&self, node: &'n NodeProto, k: usize, what: &str) -> Result<&'n str> {
        match node.input.get(k) {
            Some(n) if !n.is_empty() => Ok(n),
            _ => Err(bad(format!("{what}: input {k} is missing"))),
        }
    }

    fn constant(&self, name: &str, what: &str) -> Result<Arc<Tensor>> {
        match self.value(name, what)? {
            Value::Const(t) => Ok(Arc::clone(t)),
            _ => Err(unsupported(
                what,
                format!("a computed value {name:?} where a constant is needed"),
            )),
        }
    }

    /// The builder node behind a computed value (a pending MatMul is added now, without bias)
    /// and its ONNX shape.
    fn node_of(&mut self, name: &str, what: &str) -> Result<(u32, Vec<u64>)> {
        match self.value(name, what)?.clone() {
            Value::Node { id, shape } => Ok((id, shape)),
            Value::Linear {
                input,
                weight,
                shape,
            } => {
                let out = shape.last().copied().unwrap_or(1);
                let id = self.b.add_linear(input, out, &weight, None)?;
                self.values.insert(
                    name.to_string(),
                    Value::Node {
                        id,
                        shape: shape.clone(),
                    },
                );
                Ok((id, shape))
            }
            Value::Const(_) => Err(unsupported(
                what,
                format!("a constant {name:?} where a computed value is needed"),
            )),
        }
    }

    /// The ONNX shape with the batch dimension, for broadcasting.
    fn full(&self, shape: &[u64]) -> Vec<u64> {
        let mut full = Vec::with_capacity(shape.len() + 1);
        if self.batched {
            full.push(1);
        }
        full.extend_from_slice(shape);
        full
    }

    /// A constant broadcast to a value of ONNX shape `shape`, one f64 per element.
    fn spread(&self, c: &Tensor, shape: &[u64], what: &str) -> Result<Vec<f64>> {
        let v = c.f64s(what)?;
        let idx = broadcast_index(&c.dims, &self.full(shape), what)?;
        idx.iter()
            .map(|&i| {
                v.get(i)
                    .copied()
                    .ok_or_else(|| bad(format!("{what}: constant too short")))
            })
            .collect()
    }

    /// (x − mean) / range per element, with no clipping.
    fn affine(
        &mut self,
        x: u32,
        shape: Vec<u64>,
        mean: Vec<f64>,
        range: Vec<f64>,
    ) -> Result<Value> {
        let n = mean.len();
        let id = self.b.add_normalize(
            x,
            vec![f64::NEG_INFINITY; n],
            vec![f64::INFINITY; n],
            mean,
            range,
        )?;
        Ok(Value::Node { id, shape })
    }

    fn node(&mut self, node: &NodeProto, what: &str) -> Result<Value> {
        let attrs = Attrs::new(node, what.to_string())?;
        let op = node.op_type.as_str();
        match op {
            "Constant" => self.constant_node(&attrs, what),
            "Identity" | "Dropout" => {
                attrs.only(&["ratio", "seed"])?;
                if node.input.get(1).is_some_and(|n| !n.is_empty()) {
                    return Err(unsupported(what, "a dropout ratio input"));
                }
                Ok(self.value(self.arg(node, 0, what)?, what)?.clone())
            }
            "Relu" | "Sigmoid" | "Tanh" | "LeakyRelu" => {
                let op = match op {
                    "Relu" => Op::Relu,
                    "Sigmoid" => Op::Sigmoid,
                    "Tanh" => Op::Tanh,
                    _ => Op::LeakyRelu {
                        alpha: attrs.float("alpha", 0.01)?,
                    },
                };
                attrs.only(&["alpha"])?;
                let (x, shape) = self.node_of(self.arg(node, 0, what)?, what)?;
                let id = self.b.add_elementwise(x, op)?;
                Ok(Value::Node { id, shape })
            }
            "Flatten" => {
                attrs.only(&["axis"])?;
                let axis = attrs.int("axis", 1)?;
                let (x, shape) = self.node_of(self.arg(node, 0, what)?, what)?;
                let flattens = if self.batched {
                    axis == 1
                } else {
                    shape.len() == 1
                };
                if !flattens {
                    return Err(unsupported(
                        what,
                        format!("axis {axis} (only flattening all but the batch dimension)"),
                    ));
                }
                self.flat(x, &shape)
            }
            "Reshape" => {
                attrs.only(&["allowzero"])?;
                let (x, shape) = self.node_of(self.arg(node, 0, what)?, what)?;
                let target = self.constant(self.arg(node, 1, what)?, what)?;
                let target = self.reshape_target(&shape, target.i64s(what)?, what)?;
                if target == shape {
                    return Ok(Value::Node { id: x, shape });
                }
                if target.iter().filter(|&&d| d != 1).count() <= 1 {
                    let Value::Node { id, .. } = self.flat(x, &shape)? else {
                        return Err(bad(what));
                    };
                    return Ok(Value::Node { id, shape: target });
                }
                Err(unsupported(
                    what,
                    format!("a reshape of {shape:?} to {target:?} (only flattening ones)"),
                ))
            }
            "MatMul" => {
                attrs.only(&[])?;
                let w = self.constant(self.arg(node, 1, what)?, what)?;
                let (x, shape) = self.node_of(self.arg(node, 0, what)?, what)?;
                let [fi, fo] = w.dims[..] else {
                    return Err(unsupported(what, "a weight that is not 2-D"));
                };
                if shape.last() != Some(&fi) || shape_size(&shape) != fi {
                    return Err(unsupported(
                        what,
                        format!("a MatMul of {shape:?} by [{fi}, {fo}]"),
                    ));
                }
                let weight = transpose(&w.f32s(what)?, fi as usize, fo as usize);
                let mut out = shape;
                if let Some(l) = out.last_mut() {
                    *l = fo;
                }
                Ok(Value::Linear {
                    input: x,
                    weight,
                    shape: out,
                })
            }
            "Gemm" => self.gemm(node, &attrs, what),
            "Add" | "Sub" | "Div" => self.arith(node, &attrs, what),
            "Conv" => self.conv(node, &attrs, what),
            "BatchNormalization" => {
                attrs.only(&["epsilon", "momentum", "training_mode", "spatial"])?;
                if attrs.int("training_mode", 0)? != 0 || attrs.int("spatial", 1)? != 1 {
                    return Err(unsupported(what, "training mode or spatial = 0"));
                }
                let (x, shape) = self.node_of(self.arg(node, 0, what)?, what)?;
                let mut p = Vec::with_capacity(4);
                for k in 1..5 {
                    p.push(self.constant(self.arg(node, k, what)?, what)?.f32s(what)?);
                }
                let [gamma, beta, mean, var] = &p[..] else {
                    return Err(bad(what));
                };
                let eps = f64::from(attrs.float("epsilon", 1e-5)?);
                self.structured(x, &shape, what)?;
                let id = self.b.add_batchnorm(x, gamma, beta, mean, var, eps)?;
                Ok(Value::Node { id, shape })
            }
            "AveragePool" | "MaxPool" => self.pool(node, &attrs, op == "MaxPool", what),
            _ => Err(unsupported(what, format!("operator {op}"))),
        }
    }

    fn constant_node(&self, attrs: &Attrs<'_>, what: &str) -> Result<Value> {
        attrs.only(&[
            "value",
            "value_float",
            "value_floats",
            "value_int",
            "value_ints",
        ])?;
        let t = if let Some(t) = attrs.tensor("value")? {
            Tensor::from_proto(t, what)?
        } else if let Some(v) = attrs.ints("value_ints")? {
            Tensor {
                dims: vec![v.len() as u64],
                data: super::tensor::Data::I64(v),
            }
        } else {
            return Err(unsupported(what, "a Constant other than a tensor or ints"));
        };
        Ok(Value::Const(Arc::new(t)))
    }

    /// Flattens node `x` (a no-op node-wise when it already is flat).
    fn flat(&mut self, x: u32, shape: &[u64]) -> Result<Value> {
        let n = shape_size(shape);
        let id = if self.b.input_shape(x)?.len() > 1 {
            self.b.add_flatten(x)?
        } else {
            x
        };
        Ok(Value::Node { id, shape: vec![n] })
    }

    /// Checks that the builder node behind a value has its ONNX shape (operators over
    /// channels and pixels need it).
    fn structured(&self, x: u32, shape: &[u64], what: &str) -> Result<()> {
        if self.b.input_shape(x)? != shape {
            return Err(unsupported(
                what,
                format!("this operator on a reshaped value {shape:?}"),
            ));
        }
        Ok(())
    }

    fn reshape_target(&self, shape: &[u64], target: &[i64], what: &str) -> Result<Vec<u64>> {
        let full = self.full(shape);
        let total = shape_size(&full);
        let mut out = Vec::with_capacity(target.len());
        let mut infer = None;
        for (k, &d) in target.iter().enumerate() {
            match d {
                0 => out.push(*full.get(k).ok_or_else(|| bad(format!("{what}: bad 0")))?),
                -1 if infer.is_none() => {
                    infer = Some(k);
                    out.push(1);
                }
                d if d > 0 => out.push(d as u64),
                _ => return Err(bad(format!("{what}: bad target shape {target:?}"))),
            }
        }
        let known = shape_size(&out);
        if let Some(k) = infer {
            if known == 0 || total % known != 0 {
                return Err(bad(format!("{what}: cannot infer -1 in {target:?}")));
            }
            out[k] = total / known;
        }
        if shape_size(&out) != total {
            return Err(bad(format!(
                "{what}: {target:?} does not hold {total} elements"
            )));
        }
        if self.batched {
            if out.first() != Some(&1) {
                return Err(unsupported(
                    what,
                    "a reshape that moves the batch dimension",
                ));
            }
            out.remove(0);
        }
        Ok(out)
    }

    fn gemm(&mut self, node: &NodeProto, attrs: &Attrs<'_>, what: &str) -> Result<Value> {
        attrs.only(&["alpha", "beta", "transA", "transB"])?;
        if attrs.float("alpha", 1.0)? != 1.0 || attrs.int("transA", 0)? != 0 {
            return Err(unsupported(what, "alpha ≠ 1 or transA"));
        }
        let (x, shape) = self.node_of(self.arg(node, 0, what)?, what)?;
        let w = self.constant(self.arg(node, 1, what)?, what)?;
        let [d0, d1] = w.dims[..] else {
            return Err(unsupported(what, "a weight that is not 2-D"));
        };
        let values = w.f32s(what)?;
        let (fi, fo, weight) = if attrs.int("transB", 0)? != 0 {
            (d1, d0, values)
        } else {
            (d0, d1, transpose(&values, d0 as usize, d1 as usize))
        };
        if shape_size(&shape) != fi || shape.len() != 1 {
            return Err(unsupported(
                what,
                format!("a Gemm of {shape:?} by {fi}×{fo}"),
            ));
        }
        let bias = match node.input.get(2).filter(|n| !n.is_empty()) {
            None => None,
            Some(c) => {
                if attrs.float("beta", 1.0)? != 1.0 {
                    return Err(unsupported(what, "beta ≠ 1"));
                }
                let c = self.constant(c, what)?;
                Some(self.bias(&c, fo, what)?)
            }
        };
        let id = self.b.add_linear(x, fo, &weight, bias.as_deref())?;
        Ok(Value::Node {
            id,
            shape: vec![fo],
        })
    }

    /// A bias constant broadcast to `[out]`, exactly float32.
    fn bias(&self, c: &Tensor, out: u64, what: &str) -> Result<Vec<f32>> {
        let v = self.spread(c, &[out], what)?;
        let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        if f.iter().zip(&v).any(|(&a, &b)| f64::from(a) != b) {
            return Err(unsupported(what, "a bias that is not float32"));
        }
        Ok(f)
    }

    fn arith(&mut self, node: &NodeProto, attrs: &Attrs<'_>, what: &str) -> Result<Value> {
        attrs.only(&[])?;
        let (a, b) = (self.arg(node, 0, what)?, self.arg(node, 1, what)?);
        let op = node.op_type.as_str();
        let (va, vb) = (self.value(a, what)?.clone(), self.value(b, what)?.clone());
        match (op, va, vb) {
            (
                "Add",
                Value::Linear {
                    input,
                    weight,
                    shape,
                },
                Value::Const(c),
            )
            | (
                "Add",
                Value::Const(c),
                Value::Linear {
                    input,
                    weight,
                    shape,
                },
            ) => {
                let out = shape_size(&shape);
                let v = self.spread(&c, &shape, what)?;
                let bias: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                if bias.iter().zip(&v).any(|(&f, &d)| f64::from(f) != d) {
                    return Err(unsupported(what, "a bias that is not float32"));
                }
                let id = self.b.add_linear(input, out, &weight, Some(&bias))?;
                Ok(Value::Node { id, shape })
            }
            ("Add", Value::Const(c), _) => {
                let (x, shape) = self.node_of(b, what)?;
                let mean = self.spread(&c, &shape, what)?.iter().map(|v| -v).collect();
                let n = shape_size(&shape) as usize;
                self.affine(x, shape, mean, vec![1.0; n])
            }
            (_, _, Value::Const(c)) => {
                let (x, shape) = self.node_of(a, what)?;
                let v = self.spread(&c, &shape, what)?;
                let n = v.len();
                match op {
                    "Add" => self.affine(x, shape, v.iter().map(|v| -v).collect(), vec![1.0; n]),
                    "Sub" => self.affine(x, shape, v, vec![1.0; n]),
                    _ => {
                        if v.iter().any(|&d| d <= 0.0) {
                            return Err(unsupported(what, "division by a constant ≤ 0"));
                        }
                        self.affine(x, shape, vec![0.0; n], v)
                    }
                }
            }
            ("Add", _, _) => {
                let (x, sx) = self.node_of(a, what)?;
                let (y, sy) = self.node_of(b, what)?;
                if sx != sy || self.b.input_shape(x)? != self.b.input_shape(y)? {
                    return Err(unsupported(what, format!("an Add of {sx:?} and {sy:?}")));
                }
                let id = self.b.add_add(x, y)?;
                Ok(Value::Node { id, shape: sx })
            }
            _ => Err(unsupported(
                what,
                format!("{op} of two computed values, or of a constant by a value"),
            )),
        }
    }

    fn conv(&mut self, node: &NodeProto, attrs: &Attrs<'_>, what: &str) -> Result<Value> {
        attrs.only(&[
            "kernel_shape",
            "strides",
            "pads",
            "dilations",
            "group",
            "auto_pad",
        ])?;
        let (x, shape) = self.node_of(self.arg(node, 0, what)?, what)?;
        self.structured(x, &shape, what)?;
        let w = self.constant(self.arg(node, 1, what)?, what)?;
        let [cout, _, kh, kw] = w.dims[..] else {
            return Err(unsupported(what, "a convolution that is not 2-D"));
        };
        if let Some(k) = attrs.ints("kernel_shape")? {
            if k != [kh as i64, kw as i64] {
                return Err(bad(format!(
                    "{what}: kernel_shape {k:?} differs from the weight"
                )));
            }
        }
        let groups = attrs.int("group", 1)?;
        let conv = Conv2d {
            cin: 0,
            cout,
            kh,
            kw,
            stride: attrs.pair("strides", 1)?,
            padding: attrs.pads()?,
            dilation: attrs.pair("dilations", 1)?,
            groups: u64::try_from(groups).map_err(|_| bad(format!("{what}: group {groups}")))?,
        };
        let bias = match node.input.get(2).filter(|n| !n.is_empty()) {
            None => None,
            Some(c) => Some(self.bias(&*self.constant(c, what)?, cout, what)?),
        };
        let id = self
            .b
            .add_conv2d(x, conv, &w.f32s(what)?, bias.as_deref())?;
        let shape = self.b.input_shape(id)?.to_vec();
        Ok(Value::Node { id, shape })
    }

    fn pool(
        &mut self,
        node: &NodeProto,
        attrs: &Attrs<'_>,
        max: bool,
        what: &str,
    ) -> Result<Value> {
        attrs.only(&[
            "kernel_shape",
            "strides",
            "pads",
            "dilations",
            "auto_pad",
            "ceil_mode",
            "count_include_pad",
            "storage_order",
        ])?;
        if node.output.get(1).is_some_and(|n| !n.is_empty()) {
            return Err(unsupported(what, "MaxPool's indices output"));
        }
        if attrs.int("ceil_mode", 0)? != 0 || attrs.pair("dilations", 1)? != [1, 1] {
            return Err(unsupported(what, "ceil_mode or dilations"));
        }
        let kernel = match attrs.ints("kernel_shape")?.as_deref() {
            Some(&[h, w]) if h > 0 && w > 0 => [h as u64, w as u64],
            _ => return Err(unsupported(what, "a kernel_shape that is not 2-D")),
        };
        let padding = attrs.pads()?;
        // The builder's average counts padding in the divisor (PyTorch's default).
        if !max && padding != [0, 0] && attrs.int("count_include_pad", 0)? == 0 {
            return Err(unsupported(
                what,
                "a padded average without count_include_pad",
            ));
        }
        let (x, shape) = self.node_of(self.arg(node, 0, what)?, what)?;
        self.structured(x, &shape, what)?;
        let pool = Pool2d {
            kernel,
            stride: attrs.pair("strides", 1)?,
            padding,
        };
        let id = self.b.add_pool2d(x, pool, max)?;
        let shape = self.b.input_shape(id)?.to_vec();
        Ok(Value::Node { id, shape })
    }
}

/// `[rows, cols]` row-major into `[cols, rows]`.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            if let (Some(o), Some(&x)) = (out.get_mut(c * rows + r), v.get(r * cols + c)) {
                *o = x;
            }
        }
    }
    out
}
