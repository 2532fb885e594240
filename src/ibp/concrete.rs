//! Concrete evaluation of the network at one input, in plain f64, and its gradient: what the
//! counterexample search steps with. Nothing here is trusted for a verdict: a candidate it
//! finds is re-checked by a sound evaluation (interval bounds of the point) before it is
//! reported.

use super::cpu::Network;
use super::graph::{Node, Op};

/// Every node's value at one input.
pub struct Trace {
    pub values: Vec<Vec<f64>>,
}

impl Trace {
    pub fn output(&self) -> &[f64] {
        self.values.last().map_or(&[], |v| v.as_slice())
    }
}

fn window(
    n: usize,
    in_shape: &[u64],
    out_shape: &[u64],
    p: &super::graph::Pool2d,
) -> Vec<Vec<usize>> {
    let (c, h, w) = (
        in_shape[0] as usize,
        in_shape[1] as usize,
        in_shape[2] as usize,
    );
    let (oh, ow) = (out_shape[1] as usize, out_shape[2] as usize);
    let mut out = Vec::with_capacity(n);
    for ch in 0..c {
        for y in 0..oh {
            for x in 0..ow {
                let mut taps = Vec::new();
                for ky in 0..p.kernel[0] as usize {
                    let iy = (y * p.stride[0] as usize + ky) as isize - p.padding[0] as isize;
                    for kx in 0..p.kernel[1] as usize {
                        let ix = (x * p.stride[1] as usize + kx) as isize - p.padding[1] as isize;
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                            taps.push((ch * h + iy as usize) * w + ix as usize);
                        }
                    }
                }
                out.push(taps);
            }
        }
    }
    out
}

/// The (input index, weight index) pairs of every output of a convolution, per output.
fn conv_taps(node: &Node, in_shape: &[u64]) -> Vec<Vec<(usize, usize)>> {
    let Op::Conv2d { conv: c, .. } = &node.op else {
        return Vec::new();
    };
    let (cin, h, w) = (
        in_shape[0] as usize,
        in_shape[1] as usize,
        in_shape[2] as usize,
    );
    let (cout, oh, ow) = (
        node.shape[0] as usize,
        node.shape[1] as usize,
        node.shape[2] as usize,
    );
    let (kh, kw, g) = (c.kh as usize, c.kw as usize, c.groups as usize);
    let (cin_g, cout_g) = (cin / g, cout / g);
    let mut out = Vec::with_capacity(cout * oh * ow);
    for co in 0..cout {
        let group = co / cout_g;
        for y in 0..oh {
            for x in 0..ow {
                let mut taps = Vec::new();
                for ci in 0..cin_g {
                    for ky in 0..kh {
                        let iy = (y * c.stride[0] as usize + ky * c.dilation[0] as usize) as isize
                            - c.padding[0] as isize;
                        for kx in 0..kw {
                            let ix = (x * c.stride[1] as usize + kx * c.dilation[1] as usize)
                                as isize
                                - c.padding[1] as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                let wi = ((co * cin_g + ci) * kh + ky) * kw + kx;
                                let xi = ((group * cin_g + ci) * h + iy as usize) * w + ix as usize;
                                taps.push((xi, wi));
                            }
                        }
                    }
                }
                out.push(taps);
            }
        }
    }
    out
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

impl Network<'_> {
    /// The value of every node at input `x` (f64 arithmetic, f32 weights).
    pub fn evaluate(&self, x: &[f64]) -> Trace {
        let mut values: Vec<Vec<f64>> = Vec::with_capacity(self.nodes.len());
        values.push(x.to_vec());
        for node in self.nodes.iter().skip(1) {
            let v = &values[node.input];
            let n = node.size() as usize;
            let out: Vec<f64> = match &node.op {
                Op::Input => v.clone(),
                Op::Normalize {
                    min,
                    max,
                    mean,
                    range,
                } => (0..n)
                    .map(|i| (v[i].clamp(min[i], max[i]) - mean[i]) / range[i])
                    .collect(),
                Op::Linear {
                    in_features,
                    weight,
                    bias,
                    ..
                } => {
                    let fi = *in_features as usize;
                    let w = self.param(*weight);
                    let b = bias.map(|b| self.param(b));
                    (0..n)
                        .map(|o| {
                            let row = &w[o * fi..(o + 1) * fi];
                            let s: f64 = row.iter().zip(v).map(|(&a, &x)| f64::from(a) * x).sum();
                            s + b.map_or(0.0, |b| f64::from(b[o]))
                        })
                        .collect()
                }
                Op::Conv2d { weight, bias, .. } => {
                    let w = self.param(*weight);
                    let b = bias.map(|b| self.param(b));
                    let per = n / node.shape[0].max(1) as usize;
                    conv_taps(node, &self.nodes[node.input].shape)
                        .iter()
                        .enumerate()
                        .map(|(o, taps)| {
                            let s: f64 =
                                taps.iter().map(|&(xi, wi)| f64::from(w[wi]) * v[xi]).sum();
                            s + b.map_or(0.0, |b| f64::from(b[o / per]))
                        })
                        .collect()
                }
                Op::Relu => v.iter().map(|&x| x.max(0.0)).collect(),
                Op::LeakyRelu { alpha } => v
                    .iter()
                    .map(|&x| if x >= 0.0 { x } else { f64::from(*alpha) * x })
                    .collect(),
                Op::Sigmoid => v.iter().map(|&x| sigmoid(x)).collect(),
                Op::Tanh => v.iter().map(|&x| x.tanh()).collect(),
                Op::Flatten => v.clone(),
                Op::Add { other } => v.iter().zip(&values[*other]).map(|(a, b)| a + b).collect(),
                Op::BatchNorm { params, eps } => {
                    let p = self.param(*params);
                    let c = node.shape[0].max(1) as usize;
                    let per = n / c;
                    (0..n)
                        .map(|i| {
                            let ch = i / per;
                            let g = f64::from(p[ch]) / (f64::from(p[3 * c + ch]) + eps).sqrt();
                            g * (v[i] - f64::from(p[2 * c + ch])) + f64::from(p[c + ch])
                        })
                        .collect()
                }
                Op::AvgPool2d(p) | Op::MaxPool2d(p) => {
                    let max = matches!(node.op, Op::MaxPool2d(_));
                    let count = (p.kernel[0] * p.kernel[1]) as f64;
                    window(n, &self.nodes[node.input].shape, &node.shape, p)
                        .iter()
                        .map(|taps| {
                            if max {
                                taps.iter().map(|&i| v[i]).fold(f64::NEG_INFINITY, f64::max)
                            } else {
                                taps.iter().map(|&i| v[i]).sum::<f64>() / count
                            }
                        })
                        .collect()
                }
            };
            values.push(out);
        }
        Trace { values }
    }

    /// The gradient of `dy · output` with respect to the input, at the point of `trace`.
    // Index loops: each walks several arrays of one node (its gradient, input values) at once.
    #[allow(clippy::needless_range_loop)]
    pub fn gradient(&self, trace: &Trace, dy: &[f64]) -> Vec<f64> {
        let mut grads: Vec<Vec<f64>> = self
            .nodes
            .iter()
            .map(|n| vec![0.0; n.size() as usize])
            .collect();
        if let Some(g) = grads.last_mut() {
            for (a, &b) in g.iter_mut().zip(dy) {
                *a = b;
            }
        }
        for k in (1..self.nodes.len()).rev() {
            let node = &self.nodes[k];
            let g = std::mem::take(&mut grads[k]);
            let x = &trace.values[node.input];
            let n = g.len();
            let add = |grads: &mut Vec<Vec<f64>>, i: usize, v: f64| {
                if let Some(s) = grads[node.input].get_mut(i) {
                    *s += v;
                }
            };
            match &node.op {
                Op::Input => {}
                Op::Normalize {
                    min, max, range, ..
                } => {
                    for i in 0..n {
                        if x[i] > min[i] && x[i] < max[i] {
                            add(&mut grads, i, g[i] / range[i]);
                        }
                    }
                }
                Op::Linear {
                    in_features,
                    weight,
                    ..
                } => {
                    let fi = *in_features as usize;
                    let w = self.param(*weight);
                    for (o, &go) in g.iter().enumerate() {
                        if go != 0.0 {
                            for j in 0..fi {
                                add(&mut grads, j, go * f64::from(w[o * fi + j]));
                            }
                        }
                    }
                }
                Op::Conv2d { weight, .. } => {
                    let w = self.param(*weight);
                    for (o, taps) in conv_taps(node, &self.nodes[node.input].shape)
                        .iter()
                        .enumerate()
                    {
                        for &(xi, wi) in taps {
                            add(&mut grads, xi, g[o] * f64::from(w[wi]));
                        }
                    }
                }
                Op::Relu => {
                    for i in 0..n {
                        if x[i] > 0.0 {
                            add(&mut grads, i, g[i]);
                        }
                    }
                }
                Op::LeakyRelu { alpha } => {
                    for i in 0..n {
                        let d = if x[i] >= 0.0 { 1.0 } else { f64::from(*alpha) };
                        add(&mut grads, i, g[i] * d);
                    }
                }
                Op::Sigmoid => {
                    for i in 0..n {
                        let s = sigmoid(x[i]);
                        add(&mut grads, i, g[i] * s * (1.0 - s));
                    }
                }
                Op::Tanh => {
                    for i in 0..n {
                        let t = x[i].tanh();
                        add(&mut grads, i, g[i] * (1.0 - t * t));
                    }
                }
                Op::Flatten => {
                    for i in 0..n {
                        add(&mut grads, i, g[i]);
                    }
                }
                Op::Add { other } => {
                    for i in 0..n {
                        add(&mut grads, i, g[i]);
                        grads[*other][i] += g[i];
                    }
                }
                Op::BatchNorm { params, eps } => {
                    let p = self.param(*params);
                    let c = node.shape[0].max(1) as usize;
                    let per = n / c;
                    for i in 0..n {
                        let ch = i / per;
                        let gm = f64::from(p[ch]) / (f64::from(p[3 * c + ch]) + eps).sqrt();
                        add(&mut grads, i, g[i] * gm);
                    }
                }
                Op::AvgPool2d(p) | Op::MaxPool2d(p) => {
                    let max = matches!(node.op, Op::MaxPool2d(_));
                    let count = (p.kernel[0] * p.kernel[1]) as f64;
                    let taps = window(n, &self.nodes[node.input].shape, &node.shape, p);
                    for (o, t) in taps.iter().enumerate() {
                        if max {
                            let arg = t.iter().copied().max_by(|&a, &b| x[a].total_cmp(&x[b]));
                            if let Some(i) = arg {
                                add(&mut grads, i, g[o]);
                            }
                        } else {
                            for &i in t {
                                add(&mut grads, i, g[o] / count);
                            }
                        }
                    }
                }
            }
        }
        grads.into_iter().next().unwrap_or_default()
    }
}
