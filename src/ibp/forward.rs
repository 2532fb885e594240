//! Forward linear bounds (symbolic intervals) for dense ReLU chains with few inputs: each
//! neuron's pre-activation is bounded below and above by affine functions of the chain's input
//! `v` (after the element-wise input normalisation), carried forward layer by layer and
//! concretised over the box. On small input spaces (ACAS Xu has 5) they are far tighter than
//! IBP, so [`super::crown::Crown`] intersects them with IBP before it decides which neurons
//! still need a backward pass: on 16 384 ACAS Xu boxes that halves the backward work. The GPU
//! twin is in cuda/crown.cu (`forward_layer`, `forward_relu`).
//!
//! Soundness (docs/soundness.md, "Forward linear bounds"): a function is a coefficient vector
//! `A` and a constant `a` with `z ≥ A·v + a` (or `≤`) at every point of the box, for the numbers
//! actually stored. Through a linear layer the coefficients are summed in round-to-nearest and
//! their rounding, at most `γ_n·Σ_j |W_kj|·|R_ji|` per entry, is charged to the constant through
//! the box's magnitudes; the constants are summed by [`SoundAcc`]. Through a ReLU with bounds
//! `[l, u]`: `0`, the identity, or for an unstable one `α·(lower)` with `α ∈ {0, 1}` (CROWN's
//! adaptive choice) and `s·(upper − l)` with `s` the chord's slope rounded up.

use super::cpu::Boxes;
use super::round::{SoundAcc, gamma};

/// At most this many inputs: the functions take `(inputs + 1)` numbers per neuron and side.
pub const MAX_INPUTS: usize = 16;

const U: f64 = f64::EPSILON / 2.0;

/// Lower and upper affine functions of `v` for `n` neurons: row `j` of each is `n_v`
/// coefficients then the constant.
#[derive(Debug, Clone)]
pub struct Affine {
    pub n_v: usize,
    pub lo: Vec<f64>,
    pub up: Vec<f64>,
}

impl Affine {
    /// `v` itself: row `i` is the unit vector `e_i`, constant 0.
    pub fn identity(n_v: usize) -> Self {
        let mut lo = vec![0.0; n_v * (n_v + 1)];
        for i in 0..n_v {
            lo[i * (n_v + 1) + i] = 1.0;
        }
        Self {
            n_v,
            up: lo.clone(),
            lo,
        }
    }

    fn row(v: &[f64], j: usize, n_v: usize) -> &[f64] {
        v.get(j * (n_v + 1)..(j + 1) * (n_v + 1)).unwrap_or(&[])
    }

    /// Σ_i |f_i|·mag_i over the coefficients of row `j` of `v`.
    fn weight(v: &[f64], j: usize, n_v: usize, mag: &[f64]) -> f64 {
        Self::row(v, j, n_v)
            .iter()
            .zip(mag)
            .map(|(c, m)| if *c == 0.0 { 0.0 } else { c.abs() * m })
            .sum()
    }

    /// Sound bounds of each neuron over the box (`v` in `[vl, vh]`): the lower function's
    /// minimum and the upper function's maximum, rounded outward.
    pub fn concretise(&self, vl: &[f64], vh: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let n = self.lo.len() / (self.n_v + 1);
        let side = |f: &[f64], j: usize, upper: bool| {
            let r = Self::row(f, j, self.n_v);
            let mut acc = SoundAcc::default();
            for ((&c, &l), &h) in r.iter().zip(vl).zip(vh) {
                acc.term(c, l, h);
            }
            acc.constant(r.get(self.n_v).copied().unwrap_or(f64::NAN));
            let (lo, hi) = acc.finish64();
            if upper { hi } else { lo }
        };
        (
            (0..n).map(|j| side(&self.lo, j, false)).collect(),
            (0..n).map(|j| side(&self.up, j, true)).collect(),
        )
    }
}

/// The functions of a linear layer's outputs (`w`: `n_out × n_in` row-major, `bias`) from
/// those of its inputs `r`; `mag` holds `max(|vl_i|, |vh_i|)` of the box.
pub fn linear(r: &Affine, w: &[f32], bias: Option<&[f32]>, n_in: usize, mag: &[f64]) -> Affine {
    let n_v = r.n_v;
    let n_out = w.len().checked_div(n_in).unwrap_or(0);
    let width = n_v + 1;
    let (mut lo, mut up) = (vec![0.0; n_out * width], vec![0.0; n_out * width]);
    // M_j: the larger of Σ_i |R_ji|·mag_i over the lower and the upper function of input j.
    let m: Vec<f64> = (0..n_in)
        .map(|j| Affine::weight(&r.lo, j, n_v, mag).max(Affine::weight(&r.up, j, n_v, mag)))
        .collect();
    let g = gamma(n_in as u64 + 2);
    let slack = 1.0 + 4.0 * gamma((n_in + n_v) as u64 + 8) + 1e-12;
    let rows = w
        .chunks_exact(n_in.max(1))
        .zip(lo.chunks_exact_mut(width).zip(up.chunks_exact_mut(width)));
    for (k, (wk, (lk, uk))) in rows.enumerate() {
        let (mut c_lo, mut c_up) = (SoundAcc::default(), SoundAcc::default());
        let mut charge = 0.0;
        for (j, &wj) in wk.iter().enumerate() {
            if wj == 0.0 {
                continue;
            }
            let wj = f64::from(wj);
            // The lower function takes each input's lower function where the weight is
            // positive and its upper one where it is negative; the upper function the reverse.
            let (for_lo, for_up) = if wj > 0.0 {
                (Affine::row(&r.lo, j, n_v), Affine::row(&r.up, j, n_v))
            } else {
                (Affine::row(&r.up, j, n_v), Affine::row(&r.lo, j, n_v))
            };
            for i in 0..n_v {
                lk[i] += wj * for_lo.get(i).copied().unwrap_or(0.0);
                uk[i] += wj * for_up.get(i).copied().unwrap_or(0.0);
            }
            let (a, b) = (
                for_lo.get(n_v).copied().unwrap_or(0.0),
                for_up.get(n_v).copied().unwrap_or(0.0),
            );
            c_lo.term(wj, a, a);
            c_up.term(wj, b, b);
            charge += wj.abs() * m.get(j).copied().unwrap_or(f64::INFINITY);
        }
        if let Some(b) = bias.and_then(|b| b.get(k)) {
            c_lo.constant(f64::from(*b));
            c_up.constant(f64::from(*b));
        }
        // |fl(Σ_j W_kj R_ji) − Σ_j W_kj R_ji| ≤ γ·Σ_j |W_kj||R_ji|; over the box, Σ_i of that
        // times |v_i| is at most γ·Σ_j |W_kj|·M_j.
        let err = g * charge * slack;
        c_lo.error(err);
        c_up.error(err);
        lk[n_v] = c_lo.finish64().0;
        uk[n_v] = c_up.finish64().1;
    }
    Affine { n_v, lo, up }
}

/// The functions of a ReLU's outputs from those of its inputs `f` and the inputs' final
/// bounds `b`.
pub fn relu(f: &Affine, b: &Boxes, mag: &[f64]) -> Affine {
    let n_v = f.n_v;
    let width = n_v + 1;
    let (mut lo, mut up) = (vec![0.0; f.lo.len()], vec![0.0; f.up.len()]);
    for (j, (&l, &u)) in b.lo.iter().zip(&b.hi).enumerate() {
        let at = j * width..(j + 1) * width;
        let (Some(fl), Some(fu)) = (f.lo.get(at.clone()), f.up.get(at.clone())) else {
            continue;
        };
        if u <= 0.0 {
            continue; // always 0
        }
        if l >= 0.0 {
            lo[at.clone()].copy_from_slice(fl);
            up[at].copy_from_slice(fu);
            continue;
        }
        // Unstable: z ≥ α·x with CROWN's adaptive α (1 where the upper side dominates).
        if u >= -l {
            lo[at.clone()].copy_from_slice(fl);
        }
        if !(l.is_finite() && u.is_finite()) {
            // No chord: the widest upper function.
            up[j * width + n_v] = f64::INFINITY;
            continue;
        }
        // z ≤ s·(x − l) with s ≥ u / (u − l): s·(upper function − l), its coefficients rounded
        // to nearest and the rounding charged to the constant.
        let s = super::crown::chord_slope(0.0, l, u);
        let mut acc = SoundAcc::default();
        let mut charge = 0.0;
        for i in 0..n_v {
            let c = s * fu[i];
            up[j * width + i] = c;
            if c != 0.0 {
                charge += c.abs() * mag[i];
            }
        }
        acc.term(s, fu[n_v], fu[n_v]);
        acc.term(-s, l, l);
        acc.error(charge * U * 1.001);
        up[j * width + n_v] = acc.finish64().1;
    }
    Affine { n_v, lo, up }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2-input, 2-neuron layer and a ReLU: the functions enclose the exact values at the
    /// box's corners and centre.
    #[test]
    fn functions_hold_at_points_of_the_box() {
        let w = [1.0f32, -2.0, 0.5, 0.25];
        let bias = [0.1f32, -0.3];
        let (vl, vh) = ([-1.0, -0.5], [1.0, 0.5]);
        let mag = [1.0, 0.5];
        let f = linear(&Affine::identity(2), &w, Some(&bias), 2, &mag);
        let (lo, hi) = f.concretise(&vl, &vh);
        let r = relu(&f, &Boxes { lo, hi }, &mag);
        let g = linear(&r, &w, Some(&bias), 2, &mag);
        for p in [
            [-1.0, -0.5],
            [1.0, 0.5],
            [-1.0, 0.5],
            [1.0, -0.5],
            [0.0, 0.0],
            [0.3, -0.2],
        ] {
            let z1: Vec<f64> = (0..2)
                .map(|k| {
                    f64::from(w[2 * k]) * p[0] + f64::from(w[2 * k + 1]) * p[1] + f64::from(bias[k])
                })
                .collect();
            let y: Vec<f64> = z1.iter().map(|z| z.max(0.0)).collect();
            let z2: Vec<f64> = (0..2)
                .map(|k| {
                    f64::from(w[2 * k]) * y[0] + f64::from(w[2 * k + 1]) * y[1] + f64::from(bias[k])
                })
                .collect();
            for k in 0..2 {
                let at = |v: &[f64]| v[k * 3] * p[0] + v[k * 3 + 1] * p[1] + v[k * 3 + 2];
                assert!(
                    at(&g.lo) <= z2[k] + 1e-12 && z2[k] <= at(&g.up) + 1e-12,
                    "{p:?} {k}"
                );
            }
        }
    }
}
