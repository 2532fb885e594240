//! Interval bounds of a dense layer in centre–radius form, written so the compiler can
//! vectorise it: for a box `[l, u]`, `c = (l + u)/2` and `r ≥ max(c − l, u − c)` (rounded up)
//! give an enclosing box `[c − r, c + r]`, and the exact IBP bounds of `W·x + b` over it are
//! `W·c + b ∓ |W|·r`. Two plain dot products per output replace a branch per weight.
//!
//! Rounding: each dot product of `n` terms is within `γ_{n+2}·Σ|terms|` of exact (Higham
//! §3.1); `Σ_j |w_j·c_j| ≤ ‖w‖₁·max_j |c_j|` and `Σ_j |w_j|·r_j` is the second dot itself, so
//! the error of both is bounded without a third pass. Two more roundings (the subtraction and
//! the bias) are charged at `2u` of the magnitudes. Boxes with an infinite or NaN end are left
//! to the caller's exact per-term path (`∞ − ∞` would lose the bound's finite side).

use super::round::{gamma, lower64, upper64};

const U: f64 = f64::EPSILON / 2.0;

/// `Σ a_j·b_j` over f32 weights and f64 values, four independent sums (any order is covered
/// by the γ bound), which lets the compiler use SIMD lanes.
#[inline]
fn dot(w: &[f32], v: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (wc, vc) = (w.chunks_exact(4), v.chunks_exact(4));
    let (wr, vr) = (wc.remainder(), vc.remainder());
    for (a, b) in wc.zip(vc) {
        for k in 0..4 {
            acc[k] += f64::from(a[k]) * b[k];
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (a, b) in wr.iter().zip(vr) {
        s += f64::from(*a) * b;
    }
    s
}

/// A dense layer's weights prepared once per call: |W| and each row's ‖w‖₁.
pub struct Dense<'a> {
    pub w: &'a [f32],
    pub abs_w: Vec<f32>,
    pub l1: Vec<f64>,
    pub bias: Option<&'a [f32]>,
    pub fi: usize,
    pub fo: usize,
}

impl<'a> Dense<'a> {
    pub fn new(w: &'a [f32], bias: Option<&'a [f32]>, fi: usize, fo: usize) -> Self {
        let abs_w: Vec<f32> = w.iter().map(|v| v.abs()).collect();
        let l1 = abs_w
            .chunks_exact(fi.max(1))
            .map(|row| row.iter().map(|&v| f64::from(v)).sum::<f64>() * (1.0 + 2.0 * gamma(fi as u64)))
            .collect();
        Self {
            w,
            abs_w,
            l1,
            bias,
            fi,
            fo,
        }
    }

    /// Bounds of one box (`l`, `u`: fi values, all finite) into `lo`, `hi` (fo values);
    /// `c`, `r` are scratch of fi values.
    pub fn bound_box(&self, l: &[f64], u: &[f64], c: &mut [f64], r: &mut [f64], lo: &mut [f64], hi: &mut [f64]) {
        let mut cmax = 0.0f64;
        for j in 0..self.fi {
            let m = 0.5 * l[j] + 0.5 * u[j];
            c[j] = m;
            // One rounding each: one step up makes both true upper bounds of the distance.
            r[j] = (m - l[j]).next_up().max((u[j] - m).next_up()).max(0.0);
            cmax = cmax.max(m.abs());
        }
        let g = gamma(self.fi as u64 + 2) * (1.0 + 1e-12);
        for o in 0..self.fo {
            let (row, arow) = (&self.w[o * self.fi..(o + 1) * self.fi], &self.abs_w[o * self.fi..(o + 1) * self.fi]);
            let s = dot(row, c);
            let t = dot(arow, r);
            let b = self.bias.map_or(0.0, |b| f64::from(b[o]));
            let err = g * (self.l1[o] * cmax + t) + 2.0 * U * (s.abs() + t + b.abs()) * (1.0 + 1e-12);
            lo[o] = lower64(s - t + b, err);
            hi[o] = upper64(s + t + b, err);
        }
    }
}
