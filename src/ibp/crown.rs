//! Sound linear bounds: a backward linear relaxation (CROWN / DeepPoly family) on the CPU,
//! one box at a time, intersected with IBP at every node it tightens.
//!
//! A lower bound of `λ·y` is carried backwards as `Σ_k Λ_k·z_k + c`: coefficients `Λ_k` on
//! the values of node `k` and a constant `c`. Each node replaces the coefficients on its output
//! by coefficients on its input, through its exact affine form or a linear relaxation that
//! holds on the input's (already computed) bounds. The coefficients are ordinary f64 numbers:
//! any choice of them gives a valid bound as long as each step's inequality holds exactly for
//! the numbers actually used. So every rounded quantity is either rounded in the direction
//! that keeps its inequality true (slopes of relaxations), or its rounding error is bounded
//! and charged to `c` through the bounds of the value it multiplies (matrix products, sums of
//! coefficients). `c` is accumulated by [`SoundAcc`]. docs/soundness.md gives the argument
//! per step.
//!
//! Intermediate bounds (the inputs of ReLU and LeakyReLU, which choose the relaxations) are
//! themselves computed this way: only for the neurons IBP leaves unstable, and intersected
//! with IBP ([`Relaxation::Intersected`]); or as published CROWN computes them
//! ([`Relaxation::Textbook`]), for every neuron, alone. Neither is always the tighter
//! (intersecting changes which relaxation a neuron gets). [`Relaxation::Guarded`] is the
//! intersected one, plus a second pass without the intersection from the node where it first
//! changed a bound; [`Linear::Both`] adds textbook CROWN. Each row keeps its best bound. Ops
//! without a linear form here (sigmoid, tanh, convolution, pooling) are relaxed by their IBP
//! bounds (slope 0): sound, and no looser than IBP.

use std::sync::Arc;

use super::cpu::{Boxes, Network};
use super::graph::Op;
use super::round::{SoundAcc, gamma};
use crate::error::{Result, VramError};
use crate::fallible::try_vec;

const U: f64 = f64::EPSILON / 2.0;
/// Slack on error terms whose own evaluation rounds a few times.
const INFLATE: f64 = 1.0 + 1e-9;

/// Which bounds of the ReLU inputs choose their relaxations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relaxation {
    /// The neurons IBP leaves unstable bounded by backward passes, intersected with IBP: the
    /// tighter on average (on 16 384 ACAS Xu boxes the mean width is half textbook CROWN's),
    /// but on a few outputs wider than CROWN.
    Intersected,
    /// CROWN as published (auto_LiRPA's `method="CROWN"`): every ReLU input bounded by a
    /// backward pass, and those bounds alone.
    Textbook,
    /// [`Relaxation::Intersected`], and where the intersection first changed a ReLU input's
    /// bound (node k), a second pass from k with the backward passes' bounds alone (at k for
    /// every neuron, past k for those IBP leaves unstable), each row and output bound the
    /// better of the two. Up to k the intersection changed nothing, so the second pass would
    /// repeat the first there. On 16 384 ACAS Xu boxes (float64 NumPy model of both) this
    /// removes every output more than 10⁻⁴ wider than textbook CROWN (112 before), for a
    /// quarter more work on the quarter of the boxes it touches. Not a guarantee:
    /// [`Relaxation::Textbook`] is CROWN itself.
    Guarded,
}

/// What a node's tightening step bounds by backward passes, and what it keeps (the kernel's
/// `Tighten` in cuda/crown.cu).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tighten {
    /// The neurons IBP leaves unstable, intersected with IBP.
    Intersect,
    /// Every neuron, the backward pass's bounds alone.
    All,
    /// The neurons IBP leaves unstable, the backward pass's bounds alone.
    Unstable,
    /// The neurons IBP decides; the others take the first pass's bounds ([`Restart`]).
    Stable,
}

/// Where [`Relaxation::Guarded`]'s second pass starts: the node whose bounds the intersection
/// first changed, and that node's bounds before it (IBP's where no backward pass ran).
struct Restart {
    node: usize,
    raw: Boxes,
}

/// Which linear bounds a call computes (`IBP_METHOD_LINEAR`, `IBP_METHOD_LINEAR_BOTH` and
/// `IBP_METHOD_LINEAR_GUARDED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Linear {
    /// [`Relaxation::Intersected`].
    Intersected,
    /// [`Relaxation::Intersected`] and [`Relaxation::Textbook`], the larger lower bound of each
    /// row kept: never wider than either, at the cost of both.
    Both,
    /// [`Relaxation::Guarded`].
    Guarded,
}

impl Linear {
    /// The relaxations to run, each row's best lower bound kept ([`keep_larger`]).
    pub fn passes(self) -> &'static [Relaxation] {
        match self {
            Self::Intersected => &[Relaxation::Intersected],
            Self::Both => &[Relaxation::Intersected, Relaxation::Textbook],
            Self::Guarded => &[Relaxation::Guarded],
        }
    }
}

/// Folds one relaxation's lower bounds into the best so far (empty: none yet): each is a sound
/// lower bound of the same row, so their maximum is.
pub fn keep_larger(best: &mut Vec<f64>, next: Vec<f64>) {
    if best.is_empty() {
        *best = next;
    } else {
        best.iter_mut().zip(&next).for_each(|(b, &n)| *b = b.max(n));
    }
}

pub struct Crown<'a> {
    net: Network<'a>,
    relax: Relaxation,
    /// Per Linear node: max over outputs `o` of `|W[o][j]|`, per input `j`.
    colmax: Vec<Vec<f64>>,
    /// Nodes whose bounds choose a relaxation (the inputs of ReLU and LeakyReLU).
    pre_act: Vec<bool>,
    /// Nodes with a ReLU or LeakyReLU upstream: only there can the intersection with IBP
    /// change a relaxation's choice by more than rounding (upstream of every relaxation,
    /// both bounds are of an affine image of the box; the GPU kernel does not even tighten
    /// its first layer). [`Relaxation::Guarded`] looks for changes there only.
    relaxed_before: Vec<bool>,
}

/// Linear lower bounds of some rows `λ_r · y` of the network's output over one box.
#[derive(Debug, Clone)]
pub struct RowBounds {
    /// A lower bound of each row over the box: the larger of the linear and the IBP bound.
    pub lower: Vec<f64>,
    /// The linear bound's coefficients on the input, `rows × input size`: where the bound
    /// is most sensitive (used to choose which input to split).
    pub input_coeffs: Vec<f64>,
    /// The linear bound's constant per row, so that `λ_r·y ≥ input_coeffs_r·x + offsets_r` at
    /// every point `x` of the box (`-∞` where no such constant is known: the GPU's bounds are
    /// over the normalised input, and an input clip acting on the box makes them not affine
    /// in `x`). The part of the box where this already proves a property can be cut away.
    pub offsets: Vec<f64>,
    /// Sound bounds of the outputs over the box (IBP, with tightened intermediate bounds).
    pub out_lo: Vec<f64>,
    pub out_hi: Vec<f64>,
    /// Every node's bounds over the box: valid for any box inside it, so a sub-box can start
    /// from them ([`Crown::bound_within`]).
    pub nodes: Arc<Vec<Boxes>>,
    /// The same kept in GPU memory (the GPU path's), if a slot was free.
    pub slot: Option<Arc<crate::ibp::gpu_entry::Slot>>,
}

/// One backward pass: the coefficients reaching each node, and each row's constant.
struct Pass {
    rows: usize,
    lams: Vec<Option<Vec<f64>>>,
    acc: Vec<SoundAcc>,
}

/// Charges one rounding (at most `1.001·u` relative, the 0.1 % for the evaluation of the
/// charge itself) of quantities whose magnitudes sum to `mag` to a row's constant.
fn charge(acc: &mut SoundAcc, mag: f64) {
    if mag != 0.0 {
        acc.error(mag * U * 1.001 * INFLATE);
    }
}

fn magnitude(l: f64, u: f64) -> f64 {
    l.abs().max(u.abs())
}

impl Pass {
    /// Adds coefficients on node `k` (whose bounds are `b`) to those already there; the
    /// rounding of each sum is charged to the row's constant.
    fn add_into(&mut self, k: usize, next: Vec<f64>, b: &Boxes) {
        let Some(slot) = self.lams.get_mut(k) else {
            return;
        };
        match slot {
            None => *slot = Some(next),
            Some(have) => {
                let n = b.lo.len();
                for (r, acc) in self.acc.iter_mut().enumerate() {
                    let mut err = 0.0;
                    for j in 0..n {
                        let s = have[r * n + j] + next[r * n + j];
                        have[r * n + j] = s;
                        if s != 0.0 {
                            err += s.abs() * magnitude(b.lo[j], b.hi[j]);
                        }
                    }
                    charge(acc, err);
                }
            }
        }
    }
}

impl<'a> Crown<'a> {
    pub fn new(net: Network<'a>, relax: Relaxation) -> Self {
        let mut pre_act = vec![false; net.nodes.len()];
        let mut colmax = vec![Vec::new(); net.nodes.len()];
        for (k, node) in net.nodes.iter().enumerate() {
            match node.op {
                Op::Relu | Op::LeakyRelu { .. } => {
                    if let Some(p) = pre_act.get_mut(node.input) {
                        *p = node.input != 0;
                    }
                }
                Op::Linear {
                    in_features,
                    weight,
                    ..
                } => {
                    let fi = in_features as usize;
                    let mut m = vec![0.0f64; fi];
                    for row in net.param(weight).chunks_exact(fi.max(1)) {
                        for (c, &w) in m.iter_mut().zip(row) {
                            *c = c.max(f64::from(w).abs());
                        }
                    }
                    colmax[k] = m;
                }
                _ => {}
            }
        }
        let mut relaxed_before = vec![false; net.nodes.len()];
        for (k, node) in net.nodes.iter().enumerate().skip(1) {
            let from = |i: usize| {
                relaxed_before.get(i).copied().unwrap_or(false)
                    || net
                        .nodes
                        .get(i)
                        .is_some_and(|n| matches!(n.op, Op::Relu | Op::LeakyRelu { .. }))
            };
            let mut r = from(node.input);
            if let Op::Add { other } = node.op {
                r |= from(other);
            }
            relaxed_before[k] = r;
        }
        Self {
            net,
            relax,
            colmax,
            pre_act,
            relaxed_before,
        }
    }

    fn input_size(&self) -> usize {
        self.net.nodes.first().map_or(0, |n| n.size() as usize)
    }

    pub fn output_size(&self) -> usize {
        self.net.nodes.last().map_or(0, |n| n.size() as usize)
    }

    /// Lower bounds of the `rows` rows of `lam` (`rows × output size`, row-major) times the
    /// output, over the box `[lo, hi]` (f64, one value per input).
    pub fn bound(&self, lo: &[f64], hi: &[f64], lam: &[f64], rows: usize) -> Result<RowBounds> {
        self.bound_within(lo, hi, lam, rows, None)
    }

    /// [`Crown::bound`] for a box inside one already bounded: every node's bounds start from
    /// the outer box's (`outer`, from its [`RowBounds::nodes`]), which hold on any box inside
    /// it, so neurons already stable there are not bounded again.
    pub fn bound_within(
        &self,
        lo: &[f64],
        hi: &[f64],
        lam: &[f64],
        rows: usize,
        outer: Option<&[Boxes]>,
    ) -> Result<RowBounds> {
        let n_in = self.input_size();
        if lo.len() != n_in || hi.len() != n_in || lam.len() != rows * self.output_size() {
            return Err(VramError::invalid("box", "sizes do not match the network"));
        }
        let outer = outer.filter(|o| o.len() == self.net.nodes.len());
        let mut vals: Vec<Boxes> = Vec::with_capacity(self.net.nodes.len());
        vals.push(Boxes {
            lo: lo.to_vec(),
            hi: hi.to_vec(),
        });
        let restart = self.intermediate(&mut vals, outer, None)?;
        let (mut lower, input_coeffs, offsets) = self.rows(lam, rows, &vals)?;
        let last = self.net.nodes.len() - 1;
        let (mut out_lo, mut out_hi) = (vals[last].lo.clone(), vals[last].hi.clone());
        if let Some(r) = restart {
            // The nodes before r.node are the same in both passes.
            let mut again = vals[..r.node].to_vec();
            self.intermediate(&mut again, outer, Some(&r))?;
            keep_larger(&mut lower, self.rows(lam, rows, &again)?.0);
            for (o, a) in out_lo.iter_mut().zip(&again[last].lo) {
                *o = o.max(*a);
            }
            for (o, a) in out_hi.iter_mut().zip(&again[last].hi) {
                *o = o.min(*a);
            }
        }
        Ok(RowBounds {
            lower,
            input_coeffs,
            offsets,
            out_lo,
            out_hi,
            nodes: Arc::new(vals),
            slot: None,
        })
    }

    /// Lower bounds of the rows of `lam` over the bounds `vals` (the linear bound, or IBP's
    /// from the output's bounds where larger), with the linear bound's coefficients and
    /// constants.
    fn rows(
        &self,
        lam: &[f64],
        rows: usize,
        vals: &[Boxes],
    ) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
        let last = self.net.nodes.len() - 1;
        let (mut lower, input_coeffs, offsets) = self.backward(last, lam.to_vec(), rows, vals)?;
        let y = &vals[last];
        let n_out = self.output_size();
        for (r, l) in lower.iter_mut().enumerate() {
            let mut acc = SoundAcc::default();
            for j in 0..n_out {
                acc.term(lam[r * n_out + j], y.lo[j], y.hi[j]);
            }
            *l = l.max(acc.finish64().0);
        }
        Ok((lower, input_coeffs, offsets))
    }

    /// Bounds of the nodes past those in `vals` (the first pass: just the box) over the box:
    /// IBP, tightened by linear bounds at the inputs of ReLU and LeakyReLU, as the relaxation
    /// says. A guarded first pass returns where its second starts (if anywhere); the second
    /// pass is given it as `again`.
    fn intermediate(
        &self,
        vals: &mut Vec<Boxes>,
        outer: Option<&[Boxes]>,
        again: Option<&Restart>,
    ) -> Result<Option<Restart>> {
        let nodes = self.net.nodes;
        let mut restart = None;
        for (k, node) in nodes.iter().enumerate().skip(vals.len()) {
            let n = node.size() as usize;
            let mut out = Boxes {
                lo: try_vec(n, 0.0, "linear bounds")?,
                hi: try_vec(n, 0.0, "linear bounds")?,
            };
            let x = &vals[node.input];
            self.net.node(node, vals, x, 1, &mut out);
            if let Some(o) = outer.and_then(|o| o.get(k)) {
                for j in 0..n.min(o.lo.len()) {
                    out.lo[j] = out.lo[j].max(o.lo[j]);
                    out.hi[j] = out.hi[j].min(o.hi[j]);
                }
            }
            if !self.pre_act[k] {
                vals.push(out);
                continue;
            }
            let how = match (self.relax, again) {
                (Relaxation::Textbook, _) => Tighten::All,
                (_, None) => Tighten::Intersect,
                (_, Some(r)) if r.node == k => Tighten::Stable,
                _ => Tighten::Unstable,
            };
            let unstable: Vec<bool> = out
                .lo
                .iter()
                .zip(&out.hi)
                .map(|(&l, &h)| l < 0.0 && h > 0.0)
                .collect();
            let chosen: Vec<usize> = (0..n)
                .filter(|&j| match how {
                    Tighten::All => true,
                    Tighten::Stable => !unstable[j],
                    Tighten::Intersect | Tighten::Unstable => unstable[j],
                })
                .collect();
            if let (Tighten::Stable, Some(r)) = (how, again) {
                // The first pass's bounds of the neurons it bounded here, from the same nodes.
                let olds = r.raw.lo.iter().zip(&r.raw.hi);
                let news = out.lo.iter_mut().zip(out.hi.iter_mut());
                for ((&u, (lo, hi)), (&rl, &rh)) in unstable.iter().zip(news).zip(olds) {
                    if u {
                        (*lo, *hi) = (rl, rh);
                    }
                }
            }
            // A guarded first pass keeps the bounds before the intersection until it changes
            // one.
            let save = self.relax == Relaxation::Guarded
                && again.is_none()
                && restart.is_none()
                && self.relaxed_before[k];
            let mut raw = if save { Some(out.clone()) } else { None };
            vals.push(out);
            if chosen.is_empty() {
                continue;
            }
            let m = chosen.len();
            let mut lam = try_vec(2 * m * n, 0.0, "linear bounds")?;
            for (r, &j) in chosen.iter().enumerate() {
                lam[r * n + j] = 1.0;
                lam[(m + r) * n + j] = -1.0;
            }
            let (lower, _, _) = self.backward(k, lam, 2 * m, vals)?;
            let b = &mut vals[k];
            let mut changed = false;
            for (r, &j) in chosen.iter().enumerate() {
                let (mut lo, mut hi) = (lower[r], -lower[m + r]);
                if let Some(raw) = &mut raw {
                    (raw.lo[j], raw.hi[j]) = (lo, hi);
                }
                if how == Tighten::Intersect {
                    let (nl, nh) = (b.lo[j].max(lo), b.hi[j].min(hi));
                    changed |= nl != lo || nh != hi;
                    (lo, hi) = (nl, nh);
                }
                (b.lo[j], b.hi[j]) = (lo, hi);
            }
            if let (true, Some(raw)) = (changed, raw) {
                restart = Some(Restart { node: k, raw });
            }
        }
        Ok(restart)
    }

    /// Lower bounds of `lam · z_start` (`rows × size of node start`), the coefficients that
    /// reach the input, and each row's constant without the input's terms (a lower bound of
    /// `lam · z_start − coeffs · x` at every point of the box: every charge and relaxation is
    /// sized by the box's bounds, so it covers each point).
    fn backward(
        &self,
        start: usize,
        lam: Vec<f64>,
        rows: usize,
        vals: &[Boxes],
    ) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
        let mut pass = Pass {
            rows,
            lams: vec![None; start + 1],
            acc: vec![SoundAcc::default(); rows],
        };
        pass.lams[start] = Some(lam);
        for k in (1..=start).rev() {
            let Some(lam) = pass.lams[k].take() else {
                continue;
            };
            self.step(k, lam, &mut pass, vals)?;
        }
        let n_in = self.input_size();
        let input = pass.lams[0].take().unwrap_or_default();
        let b = &vals[0];
        let offsets = pass.acc.iter().map(|acc| acc.finish64().0).collect();
        let lower = pass
            .acc
            .iter_mut()
            .enumerate()
            .map(|(r, acc)| {
                if let Some(lr) = input.get(r * n_in..(r + 1) * n_in) {
                    for ((&l, &xl), &xu) in lr.iter().zip(&b.lo).zip(&b.hi) {
                        acc.term(l, xl, xu);
                    }
                }
                acc.finish64().0
            })
            .collect();
        let coeffs = if input.is_empty() {
            try_vec(rows * n_in, 0.0, "linear bounds")?
        } else {
            input
        };
        Ok((lower, coeffs, offsets))
    }

    /// Moves the coefficients on node `k`'s output to its input(s).
    fn step(&self, k: usize, lam: Vec<f64>, pass: &mut Pass, vals: &[Boxes]) -> Result<()> {
        let node = &self.net.nodes[k];
        let x = node.input;
        let (xb, zb) = (&vals[x], &vals[k]);
        let n = node.size() as usize;
        let rows = pass.rows;
        match &node.op {
            Op::Linear {
                in_features,
                out_features,
                weight,
                bias,
            } => {
                let (fi, fo) = (*in_features as usize, *out_features as usize);
                let w = self.net.param(*weight);
                let bias = bias.map(|b| self.net.param(b));
                let colmax = &self.colmax[k];
                let mut mag = 0.0;
                for ((&c, &xl), &xu) in colmax.iter().zip(&xb.lo).zip(&xb.hi) {
                    if c != 0.0 {
                        mag += c * magnitude(xl, xu);
                    }
                }
                let g = gamma(fo as u64 + 2);
                let slack = 1.0 + 2.0 * gamma((fo + fi) as u64 + 8) + 1e-12;
                let mut next = try_vec(rows * fi, 0.0, "linear bounds")?;
                for r in 0..rows {
                    let lr = &lam[r * fo..(r + 1) * fo];
                    let nr = &mut next[r * fi..(r + 1) * fi];
                    let mut s = 0.0;
                    for (o, &l) in lr.iter().enumerate() {
                        if l == 0.0 {
                            continue;
                        }
                        s += l.abs();
                        for (acc_j, &wj) in nr.iter_mut().zip(&w[o * fi..(o + 1) * fi]) {
                            *acc_j += l * f64::from(wj);
                        }
                        if let Some(b) = bias {
                            let bo = f64::from(b[o]);
                            pass.acc[r].term(l, bo, bo);
                        }
                    }
                    if s != 0.0 && mag != 0.0 {
                        // |fl(Σ_o λ_o W_oj) − Σ_o λ_o W_oj| ≤ γ·Σ_o |λ_o|·|W_oj|.
                        pass.acc[r].error(g * s * mag * slack);
                    }
                }
                pass.add_into(x, next, xb);
            }
            Op::Relu | Op::LeakyRelu { .. } => {
                let a = match node.op {
                    Op::LeakyRelu { alpha } => f64::from(alpha),
                    _ => 0.0,
                };
                let next = elementwise(&lam, n, pass, |j, l, acc| {
                    let (xl, xu) = (xb.lo[j], xb.hi[j]);
                    if xl >= 0.0 {
                        (l, 0.0)
                    } else if xu <= 0.0 && a == 0.0 {
                        (0.0, 0.0)
                    } else if xu <= 0.0 {
                        // z = a·x exactly; μ = fl(λ·a).
                        let mu = l * a;
                        (mu, mu.abs() * magnitude(xl, xu))
                    } else if !(xl.is_finite() && xu.is_finite()) {
                        acc.term(l, zb.lo[j], zb.hi[j]);
                        (0.0, 0.0)
                    } else if l > 0.0 {
                        (relu_lower(l, a, xl, xu), 0.0)
                    } else {
                        (relu_upper(l, a, xl, xu, acc), 0.0)
                    }
                })?;
                pass.add_into(x, next, xb);
            }
            Op::Normalize {
                min,
                max,
                mean,
                range,
            } => {
                let next = elementwise(&lam, n, pass, |j, l, acc| {
                    let (xl, xu) = (xb.lo[j], xb.hi[j]);
                    if xl >= min[j] && xu <= max[j] {
                        // z = (x − m) / r exactly; μ = fl(λ / r).
                        let mu = l / range[j];
                        acc.term(-mu, mean[j], mean[j]);
                        (mu, mu.abs() * (magnitude(xl, xu) + mean[j].abs()))
                    } else {
                        acc.term(l, zb.lo[j], zb.hi[j]);
                        (0.0, 0.0)
                    }
                })?;
                pass.add_into(x, next, xb);
            }
            Op::BatchNorm { params, eps } => {
                let p = self.net.param(*params);
                let channels = node.shape.first().copied().unwrap_or(1).max(1) as usize;
                let per = (n / channels).max(1);
                // g = γ / √(var + ε) carries three roundings (add, sqrt, divide): within 4u|g|.
                let g: Vec<f64> = (0..channels)
                    .map(|ch| f64::from(p[ch]) / (f64::from(p[3 * channels + ch]) + eps).sqrt())
                    .collect();
                let next = elementwise(&lam, n, pass, |j, l, acc| {
                    let ch = j / per;
                    let (bt, mn) = (f64::from(p[channels + ch]), f64::from(p[2 * channels + ch]));
                    let mu = l * g[ch];
                    acc.term(-mu, mn, mn);
                    acc.term(l, bt, bt);
                    let m = magnitude(xb.lo[j], xb.hi[j]) + mn.abs();
                    (mu, (1.001 * mu.abs() + 4.001 * (l * g[ch]).abs()) * m)
                })?;
                pass.add_into(x, next, xb);
            }
            Op::Flatten => pass.add_into(x, lam, xb),
            Op::Add { other } => {
                let ob = &vals[*other];
                pass.add_into(x, lam.clone(), xb);
                pass.add_into(*other, lam, ob);
            }
            Op::Input => {}
            Op::Sigmoid | Op::Tanh | Op::Conv2d { .. } | Op::AvgPool2d(_) | Op::MaxPool2d(_) => {
                // Relaxed by the node's own bounds: λ·z ≥ Σ min(λ·lo, λ·hi).
                for r in 0..rows {
                    for j in 0..n {
                        pass.acc[r].term(lam[r * n + j], zb.lo[j], zb.hi[j]);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Coefficients through an element-wise node, row by row: `relax(j, λ, acc)` adds what it
/// must to the row's constant and returns the coefficient on the input's element `j` and the
/// magnitude of the rounding it leaves, charged once per row. Zero coefficients are skipped.
fn elementwise(
    lam: &[f64],
    n: usize,
    pass: &mut Pass,
    mut relax: impl FnMut(usize, f64, &mut SoundAcc) -> (f64, f64),
) -> Result<Vec<f64>> {
    let mut next = try_vec(pass.rows * n, 0.0, "linear bounds")?;
    for (r, acc) in pass.acc.iter_mut().enumerate() {
        let mut err = 0.0;
        for j in 0..n {
            let l = lam[r * n + j];
            if l != 0.0 {
                let (mu, e) = relax(j, l, acc);
                next[r * n + j] = mu;
                err += e;
            }
        }
        charge(acc, err);
    }
    Ok(next)
}

/// λ > 0 on an unstable leaky ReLU z = max(x, a·x) (a < 1): z ≥ β·x for any β in [a, 1];
/// β = 1 when the upper side dominates (CROWN's adaptive choice), else a. Returns λβ' with
/// β' = μ/λ kept in [a, 1] despite rounding.
fn relu_lower(l: f64, a: f64, xl: f64, xu: f64) -> f64 {
    if xu >= -xl || a >= 1.0 {
        l
    } else if a == 0.0 {
        0.0
    } else {
        (l * a).next_up().min(l)
    }
}

/// λ < 0 on an unstable leaky ReLU: z ≤ a·l + s·(x − l) with s ≥ (u − a·l)/(u − l) (any
/// steeper line through (l, a·l) stays above the chord on [l, u]). Adds λ·a·l − μ·l to the
/// row's constant and returns μ = λ·s'' with s'' ≥ s exactly.
fn relu_upper(l: f64, a: f64, xl: f64, xu: f64, acc: &mut SoundAcc) -> f64 {
    let al = a * xl; // ≤ 0, within one rounding of a·xl
    let num = (xu - al.next_down()).next_up(); // ≥ u − a·l
    let den = (xu - xl).next_down(); // ≤ u − l, > 0
    let s = (num / den).next_up();
    let mu = (l * s).next_down(); // ≤ λ·s: μ/λ ≥ s
    acc.term(-mu, xl, xl);
    if a != 0.0 {
        acc.term(l, al.next_down(), al.next_up());
    }
    mu
}
