//! Interval bound propagation on the CPU, parallel over the batch. Every bound is produced by
//! the sound primitives of [`super::round`]: see docs/soundness.md for the argument per layer.
//!
//! Intermediate bounds are kept in f64 (rounded outward in f64), and only the final ones are
//! rounded outward to f32: IBP amplifies any excess width by about ‖W‖ per layer, so an f32
//! ulp of excess per layer would grow to ~1e-4 over six ACAS Xu layers, an f64 one to ~1e-12.

use super::dense::Dense;
use super::graph::{Conv2d, Node, Op, Pool2d};
use super::round::{SoundAcc, down32, lower64, up32, upper64};
use super::spec::Spec;
use crate::error::{Result, VramError};
use crate::fallible::{try_vec, try_with_capacity};

const U: f64 = f64::EPSILON / 2.0;
/// Relative margin for sigmoid/tanh evaluated in f64 by the platform libm: glibc documents
/// at most 2 ulp (2⁻⁵¹) for exp and tanh on x86-64; 2⁻⁴⁰ covers that and the few f64
/// operations around it with a factor of 1000 to spare, and is still far below an f32 ulp.
const TRANSCENDENTAL_MARGIN: f64 = 1.0 / (1u64 << 40) as f64;

/// Bounds of `(clamp(x, min, max) − mean) / range` for `x` in `[l, u]` (`p`: min, max, mean,
/// range > 0): monotone, so the image of the interval is that of its ends, each rounded outward.
pub(crate) fn normalize_bounds(l: f64, u: f64, p: [f64; 4]) -> (f64, f64) {
    let [min, max, mean, range] = p;
    let ql = (l.clamp(min, max) - mean) / range;
    let qu = (u.clamp(min, max) - mean) / range;
    // Two roundings (subtract, divide), each within u of the result.
    (
        lower64(ql, 4.0 * U * ql.abs()),
        upper64(qu, 4.0 * U * qu.abs()),
    )
}

/// A network ready to run: its nodes and the host view of its parameters.
pub struct Network<'a> {
    pub nodes: &'a [Node],
    pub params: Vec<&'a [f32]>,
}

/// Bounds of `items` batch items for one node: lower and upper, item-major.
#[derive(Debug, Clone, Default)]
pub struct Boxes {
    pub lo: Vec<f64>,
    pub hi: Vec<f64>,
}

impl Network<'_> {
    pub(crate) fn param(&self, i: usize) -> &[f32] {
        self.params.get(i).copied().unwrap_or(&[])
    }

    /// Propagates `items` boxes (`in_lo`/`in_hi`: items × input size) through every node and
    /// writes the output (or spec) bounds to `out_lo`/`out_hi`.
    pub fn run_chunk(
        &self,
        items: usize,
        in_lo: &[f32],
        in_hi: &[f32],
        spec: Option<&Spec>,
        out_lo: &mut [f32],
        out_hi: &mut [f32],
    ) -> Result<()> {
        let mut values: Vec<Boxes> = try_with_capacity(self.nodes.len(), "IBP bounds")?;
        for (k, node) in self.nodes.iter().enumerate() {
            let n = usize::try_from(node.size())
                .ok()
                .and_then(|size| items.checked_mul(size))
                .ok_or_else(|| {
                    VramError::out_of_memory("IBP bounds: batch × node size overflows")
                })?;
            let mut out = Boxes {
                lo: try_vec(n, 0.0, "IBP bounds")?,
                hi: try_vec(n, 0.0, "IBP bounds")?,
            };
            if k == 0 {
                out.lo
                    .iter_mut()
                    .zip(in_lo)
                    .for_each(|(o, &v)| *o = f64::from(v));
                out.hi
                    .iter_mut()
                    .zip(in_hi)
                    .for_each(|(o, &v)| *o = f64::from(v));
            } else {
                let x = &values[node.input];
                self.node(node, &values, x, items, &mut out);
            }
            values.push(out);
        }
        let last = values.len() - 1;
        match spec {
            None => {
                out_lo
                    .iter_mut()
                    .zip(&values[last].lo)
                    .for_each(|(o, &v)| *o = down32(v));
                out_hi
                    .iter_mut()
                    .zip(&values[last].hi)
                    .for_each(|(o, &v)| *o = up32(v));
            }
            Some(s) => self.apply_spec(s, &values, items, out_lo, out_hi)?,
        }
        Ok(())
    }

    /// IBP through one node for `items` boxes: `x` holds the bounds of its input, `values`
    /// those of every earlier node.
    pub(crate) fn node(
        &self,
        node: &Node,
        values: &[Boxes],
        x: &Boxes,
        items: usize,
        out: &mut Boxes,
    ) {
        let n = node.size() as usize;
        match &node.op {
            Op::Input => {}
            Op::Normalize {
                min,
                max,
                mean,
                range,
            } => {
                for b in 0..items {
                    for i in 0..n {
                        let at = b * n + i;
                        let p = [min[i], max[i], mean[i], range[i]];
                        (out.lo[at], out.hi[at]) = normalize_bounds(x.lo[at], x.hi[at], p);
                    }
                }
            }
            Op::Linear {
                in_features,
                out_features,
                weight,
                bias,
            } => {
                let (fi, fo) = (*in_features as usize, *out_features as usize);
                let w = self.param(*weight);
                let bias = bias.map(|b| self.param(b));
                let (l, u) = (&x.lo[..items * fi], &x.hi[..items * fi]);
                Dense::new(w, bias, fi, fo).bound(items, l, u, &mut out.lo, &mut out.hi);
            }
            Op::Conv2d { conv, weight, bias } => {
                let prev = &self.nodes[node.input].shape;
                self.conv2d(conv, prev, &node.shape, *weight, *bias, x, items, out);
            }
            Op::Relu => {
                for (o, &v) in out.lo.iter_mut().zip(&x.lo) {
                    *o = v.max(0.0);
                }
                for (o, &v) in out.hi.iter_mut().zip(&x.hi) {
                    *o = v.max(0.0);
                }
            }
            Op::LeakyRelu { alpha } => {
                let a = f64::from(*alpha);
                for i in 0..items * n {
                    let (l, u) = (x.lo[i], x.hi[i]);
                    // α·x is one rounded f64 product: one f64 ulp outward covers it.
                    out.lo[i] = if l >= 0.0 { l } else { (a * l).next_down() };
                    out.hi[i] = if u >= 0.0 { u } else { (a * u).next_up() };
                }
            }
            Op::Sigmoid => {
                let f = |v: f64| 1.0 / (1.0 + (-v).exp());
                for i in 0..items * n {
                    let (l, u) = (f(x.lo[i]), f(x.hi[i]));
                    out.lo[i] = lower64(l, l * TRANSCENDENTAL_MARGIN + f64::MIN_POSITIVE).max(0.0);
                    out.hi[i] = upper64(u, u * TRANSCENDENTAL_MARGIN + f64::MIN_POSITIVE).min(1.0);
                }
            }
            Op::Tanh => {
                for i in 0..items * n {
                    let (l, u) = (x.lo[i].tanh(), x.hi[i].tanh());
                    out.lo[i] =
                        lower64(l, l.abs() * TRANSCENDENTAL_MARGIN + f64::MIN_POSITIVE).max(-1.0);
                    out.hi[i] =
                        upper64(u, u.abs() * TRANSCENDENTAL_MARGIN + f64::MIN_POSITIVE).min(1.0);
                }
            }
            Op::Flatten => {
                out.lo.copy_from_slice(&x.lo[..items * n]);
                out.hi.copy_from_slice(&x.hi[..items * n]);
            }
            Op::Add { other } => {
                let y = &values[*other];
                for i in 0..items * n {
                    let sl = x.lo[i] + y.lo[i];
                    let su = x.hi[i] + y.hi[i];
                    out.lo[i] = lower64(sl, sl.abs() * U);
                    out.hi[i] = upper64(su, su.abs() * U);
                }
            }
            Op::BatchNorm { params, eps } => {
                self.batchnorm(*params, *eps, &node.shape, x, items, out)
            }
            Op::AvgPool2d(p) => self.pool(
                p,
                &self.nodes[node.input].shape,
                &node.shape,
                x,
                items,
                out,
                false,
            ),
            Op::MaxPool2d(p) => self.pool(
                p,
                &self.nodes[node.input].shape,
                &node.shape,
                x,
                items,
                out,
                true,
            ),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn conv2d(
        &self,
        c: &Conv2d,
        in_shape: &[u64],
        out_shape: &[u64],
        weight: usize,
        bias: Option<usize>,
        x: &Boxes,
        items: usize,
        out: &mut Boxes,
    ) {
        let (cin, h, w) = (
            in_shape[0] as usize,
            in_shape[1] as usize,
            in_shape[2] as usize,
        );
        let (cout, oh, ow) = (
            out_shape[0] as usize,
            out_shape[1] as usize,
            out_shape[2] as usize,
        );
        let (kh, kw) = (c.kh as usize, c.kw as usize);
        let g = c.groups as usize;
        let (cin_g, cout_g) = (cin / g, cout / g);
        let wt = self.param(weight);
        let bs = bias.map(|b| self.param(b));
        let n_in = cin * h * w;
        let n_out = cout * oh * ow;
        for b in 0..items {
            let (xl, xu) = (
                &x.lo[b * n_in..(b + 1) * n_in],
                &x.hi[b * n_in..(b + 1) * n_in],
            );
            for co in 0..cout {
                let group = co / cout_g;
                for y in 0..oh {
                    for xo in 0..ow {
                        let mut acc = SoundAcc::default();
                        for ci in 0..cin_g {
                            let cin_idx = group * cin_g + ci;
                            for ky in 0..kh {
                                let iy = (y * c.stride[0] as usize + ky * c.dilation[0] as usize)
                                    as isize
                                    - c.padding[0] as isize;
                                if iy < 0 || iy >= h as isize {
                                    continue; // zero padding: the exact term is 0
                                }
                                for kx in 0..kw {
                                    let ix = (xo * c.stride[1] as usize
                                        + kx * c.dilation[1] as usize)
                                        as isize
                                        - c.padding[1] as isize;
                                    if ix < 0 || ix >= w as isize {
                                        continue;
                                    }
                                    let wi = ((co * cin_g + ci) * kh + ky) * kw + kx;
                                    let xi = (cin_idx * h + iy as usize) * w + ix as usize;
                                    acc.term(f64::from(wt[wi]), xl[xi], xu[xi]);
                                }
                            }
                        }
                        if let Some(bs) = bs {
                            acc.constant(f64::from(bs[co]));
                        }
                        let (lo, hi) = acc.finish64();
                        let o = b * n_out + (co * oh + y) * ow + xo;
                        out.lo[o] = lo;
                        out.hi[o] = hi;
                    }
                }
            }
        }
    }

    fn batchnorm(
        &self,
        params: usize,
        eps: f64,
        shape: &[u64],
        x: &Boxes,
        items: usize,
        out: &mut Boxes,
    ) {
        let p = self.param(params);
        let channels = shape[0] as usize;
        let n = shape.iter().product::<u64>() as usize;
        let per_channel = n / channels;
        let (gamma, beta, mean, var) = (
            &p[..channels],
            &p[channels..2 * channels],
            &p[2 * channels..3 * channels],
            &p[3 * channels..],
        );
        for ch in 0..channels {
            let a = f64::from(gamma[ch]) / (f64::from(var[ch]) + eps).sqrt();
            let (m, bt) = (f64::from(mean[ch]), f64::from(beta[ch]));
            let eval = |v: f64| {
                let y = a * (v - m) + bt;
                // a carries ≤ 3 roundings (add, sqrt, divide), the expression ≤ 3 more.
                let err = 12.0 * U * (a.abs() * (v.abs() + m.abs()) + bt.abs()) + f64::MIN_POSITIVE;
                (y, err)
            };
            for b in 0..items {
                for k in 0..per_channel {
                    let i = b * n + ch * per_channel + k;
                    let ((yl, el), (yu, eu)) = (eval(x.lo[i]), eval(x.hi[i]));
                    let (l1, u1) = (lower64(yl, el), upper64(yl, el));
                    let (l2, u2) = (lower64(yu, eu), upper64(yu, eu));
                    out.lo[i] = l1.min(l2);
                    out.hi[i] = u1.max(u2);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn pool(
        &self,
        p: &Pool2d,
        in_shape: &[u64],
        out_shape: &[u64],
        x: &Boxes,
        items: usize,
        out: &mut Boxes,
        max: bool,
    ) {
        let (c, h, w) = (
            in_shape[0] as usize,
            in_shape[1] as usize,
            in_shape[2] as usize,
        );
        let (oh, ow) = (out_shape[1] as usize, out_shape[2] as usize);
        let (kh, kw) = (p.kernel[0] as usize, p.kernel[1] as usize);
        let count = (kh * kw) as f64; // count_include_pad = true, as PyTorch's default
        let (n_in, n_out) = (c * h * w, c * oh * ow);
        for b in 0..items {
            for ch in 0..c {
                for y in 0..oh {
                    for xo in 0..ow {
                        let mut acc = SoundAcc::default();
                        let (mut ml, mut mu) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
                        for ky in 0..kh {
                            let iy =
                                (y * p.stride[0] as usize + ky) as isize - p.padding[0] as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for kx in 0..kw {
                                let ix = (xo * p.stride[1] as usize + kx) as isize
                                    - p.padding[1] as isize;
                                if ix < 0 || ix >= w as isize {
                                    continue;
                                }
                                let i = b * n_in + (ch * h + iy as usize) * w + ix as usize;
                                if max {
                                    ml = ml.max(x.lo[i]);
                                    mu = mu.max(x.hi[i]);
                                } else {
                                    acc.term(1.0, x.lo[i], x.hi[i]);
                                }
                            }
                        }
                        let o = b * n_out + (ch * oh + y) * ow + xo;
                        if max {
                            out.lo[o] = ml;
                            out.hi[o] = mu;
                        } else {
                            let (lo, hi, el, eh) = acc.raw();
                            let (ql, qh) = (lo / count, hi / count);
                            out.lo[o] = lower64(ql, el / count + 2.0 * U * ql.abs());
                            out.hi[o] = upper64(qh, eh / count + 2.0 * U * qh.abs());
                        }
                    }
                }
            }
        }
    }

    /// Bounds on C·y + d. When the last node is linear, C is folded into it (C·W computed in
    /// f64 with its own error bound), which is tighter than applying C to the output box.
    fn apply_spec(
        &self,
        s: &Spec,
        values: &[Boxes],
        items: usize,
        out_lo: &mut [f32],
        out_hi: &mut [f32],
    ) -> Result<()> {
        let last = self.nodes.len() - 1;
        let m = s.rows;
        if let Op::Linear {
            in_features,
            out_features,
            weight,
            bias,
        } = &self.nodes[last].op
        {
            let (fi, fo) = (*in_features as usize, *out_features as usize);
            let (w, bias) = (self.param(*weight), bias.map(|b| self.param(b)));
            let x = &values[self.nodes[last].input];
            fold_spec_linear(s, w, bias, fi, fo, &x.lo, &x.hi, items, out_lo, out_hi)?;
        } else {
            let y = &values[last];
            let n = self.nodes[last].size() as usize;
            for b in 0..items {
                for k in 0..m {
                    let mut acc = SoundAcc::default();
                    for i in 0..n {
                        acc.term(f64::from(s.c[k * n + i]), y.lo[b * n + i], y.hi[b * n + i]);
                    }
                    acc.constant(f64::from(s.d.get(k).copied().unwrap_or(0.0)));
                    let (lo, hi) = acc.finish();
                    out_lo[b * m + k] = lo;
                    out_hi[b * m + k] = hi;
                }
            }
        }
        Ok(())
    }
}

/// Bounds on C·(W·x + b) + d for x in the given f64 boxes, with C folded into W: M = C·W is
/// computed in f64 with a bound δ on each entry's rounding error, which is tighter than bounding
/// C·y from the box of y. Used by the CPU path and, on the host, by the GPU path.
#[allow(clippy::too_many_arguments)]
pub fn fold_spec_linear(
    s: &Spec,
    w: &[f32],
    bias: Option<&[f32]>,
    fi: usize,
    fo: usize,
    x_lo: &[f64],
    x_hi: &[f64],
    items: usize,
    out_lo: &mut [f32],
    out_hi: &mut [f32],
) -> Result<()> {
    let m = s.rows;
    let n = m
        .checked_mul(fi)
        .ok_or_else(|| VramError::out_of_memory("spec folding: rows × inputs overflows"))?;
    let mut folded = try_vec(n, (0.0f64, 0.0f64), "spec folding")?;
    for k in 0..m {
        for j in 0..fi {
            let (mut sum, mut mag) = (0.0f64, 0.0f64);
            for i in 0..fo {
                let p = f64::from(s.c[k * fo + i]) * f64::from(w[i * fi + j]);
                sum += p;
                mag += p.abs();
            }
            folded[k * fi + j] = (
                sum,
                super::round::gamma(fo as u64 + 2) * mag * (1.0 + 1e-12),
            );
        }
    }
    for b in 0..items {
        for k in 0..m {
            let mut acc = SoundAcc::default();
            for j in 0..fi {
                let (mkj, delta) = folded[k * fi + j];
                let (l, u) = (x_lo[b * fi + j], x_hi[b * fi + j]);
                acc.term(mkj, l, u);
                if delta > 0.0 {
                    acc.error(delta * l.abs().max(u.abs()));
                }
            }
            if let Some(bs) = bias {
                for (&c, &bi) in s.c[k * fo..(k + 1) * fo].iter().zip(bs) {
                    acc.constant(f64::from(c) * f64::from(bi));
                }
            }
            acc.constant(f64::from(s.d.get(k).copied().unwrap_or(0.0)));
            let (lo, hi) = acc.finish();
            out_lo[b * m + k] = lo;
            out_hi[b * m + k] = hi;
        }
    }
    Ok(())
}
