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
/// Boxes bounded together by [`Dense::bound_block`].
pub const BLOCK: usize = 8;

const LANES: usize = 8;

/// `(Σ w_j·c_j, Σ |w_j|·r_j, Σ |w_j|)` over one f64 row, in `LANES` independent sums (any
/// order is covered by the γ bound): independent chains fill SIMD lanes and hide the adder's
/// latency.
#[inline(always)]
fn dots(w: &[f64], c: &[f64], r: &[f64]) -> (f64, f64, f64) {
    let (mut s, mut t, mut n) = ([0.0f64; LANES], [0.0f64; LANES], [0.0f64; LANES]);
    let chunks = w
        .chunks_exact(LANES)
        .zip(c.chunks_exact(LANES))
        .zip(r.chunks_exact(LANES));
    for ((w, c), r) in chunks {
        if let (Ok(w), Ok(c), Ok(r)) = (
            <&[f64; LANES]>::try_from(w),
            <&[f64; LANES]>::try_from(c),
            <&[f64; LANES]>::try_from(r),
        ) {
            for k in 0..LANES {
                let a = w[k].abs();
                s[k] += w[k] * c[k];
                t[k] += a * r[k];
                n[k] += a;
            }
        }
    }
    let tail = w.len() - w.len() % LANES;
    for j in tail..w.len() {
        let a = w[j].abs();
        s[0] += w[j] * c[j];
        t[0] += a * r[j];
        n[0] += a;
    }
    (s.iter().sum(), t.iter().sum(), n.iter().sum())
}

/// A dense layer: |W| and each row's ‖w‖₁.
pub struct Dense<'a> {
    pub w: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub fi: usize,
    pub fo: usize,
}

impl<'a> Dense<'a> {
    pub fn new(w: &'a [f32], bias: Option<&'a [f32]>, fi: usize, fo: usize) -> Self {
        Self { w, bias, fi, fo }
    }

    /// Bounds of `nb ≤ BLOCK` boxes at once (`l`, `u`: nb × fi values, item-major, all
    /// finite) into `lo`, `hi` (nb × fo): each weight is loaded once for the block and the
    /// block's sums are independent, so they fill SIMD lanes and hide the adder's latency.
    pub fn bound_block(&self, nb: usize, l: &[f64], u: &[f64], lo: &mut [f64], hi: &mut [f64]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above), the only requirement of a
            // `target_feature` function; the body is the same safe code.
            unsafe { self.bound_block_avx2(nb, l, u, lo, hi) };
            return;
        }
        self.bound_block_portable(nb, l, u, lo, hi);
    }

    /// [`Dense::bound_block`] compiled for AVX2 (four f64 lanes): the same operations, each
    /// rounded as written (no fused multiply-add), so the same error bound holds.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn bound_block_avx2(
        &self,
        nb: usize,
        l: &[f64],
        u: &[f64],
        lo: &mut [f64],
        hi: &mut [f64],
    ) {
        self.bound_block_portable(nb, l, u, lo, hi);
    }

    #[inline(always)]
    fn bound_block_portable(
        &self,
        nb: usize,
        l: &[f64],
        u: &[f64],
        lo: &mut [f64],
        hi: &mut [f64],
    ) {
        let (fi, fo) = (self.fi, self.fo);
        let mut c = vec![[0.0f64; BLOCK]; fi];
        let mut r = vec![[0.0f64; BLOCK]; fi];
        let mut cmax = [0.0f64; BLOCK];
        for b in 0..nb.min(BLOCK) {
            for j in 0..fi {
                let (lj, uj) = (l[b * fi + j], u[b * fi + j]);
                let m = 0.5 * lj + 0.5 * uj;
                c[j][b] = m;
                r[j][b] = (m - lj).next_up().max((uj - m).next_up()).max(0.0);
                cmax[b] = cmax[b].max(m.abs());
            }
        }
        let g = gamma(fi as u64 + 2) * (1.0 + 1e-12);
        // ‖w‖₁ as summed here, made an upper bound of the exact one.
        let l1_up = 1.0 + 2.0 * gamma(fi as u64);
        for o in 0..fo {
            let (mut s, mut t) = ([0.0f64; BLOCK], [0.0f64; BLOCK]);
            let mut l1 = 0.0f64;
            let row = &self.w[o * fi..(o + 1) * fi];
            for ((&wj, cj), rj) in row.iter().zip(&c).zip(&r) {
                let (w, aw) = (f64::from(wj), f64::from(wj.abs()));
                l1 += aw;
                for b in 0..BLOCK {
                    s[b] += w * cj[b];
                    t[b] += aw * rj[b];
                }
            }
            let l1 = l1 * l1_up;
            let bias = self.bias.map_or(0.0, |b| f64::from(b[o]));
            for b in 0..nb.min(BLOCK) {
                let err = g * (l1 * cmax[b] + t[b])
                    + 2.0 * U * (s[b].abs() + t[b] + bias.abs()) * (1.0 + 1e-12);
                lo[b * fo + o] = lower64(s[b] - t[b] + bias, err);
                hi[b * fo + o] = upper64(s[b] + t[b] + bias, err);
            }
        }
    }

    /// Bounds of one box (`l`, `u`: fi values, all finite) into `lo`, `hi` (fo values);
    /// `c`, `r`, `row` are scratch of fi values.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    pub fn bound_box(
        &self,
        l: &[f64],
        u: &[f64],
        c: &mut [f64],
        r: &mut [f64],
        row: &mut [f64],
        lo: &mut [f64],
        hi: &mut [f64],
    ) {
        let mut cmax = 0.0f64;
        for j in 0..self.fi {
            let m = 0.5 * l[j] + 0.5 * u[j];
            c[j] = m;
            // One rounding each: one step up makes both true upper bounds of the distance.
            r[j] = (m - l[j]).next_up().max((u[j] - m).next_up()).max(0.0);
            cmax = cmax.max(m.abs());
        }
        let g = gamma(self.fi as u64 + 2) * (1.0 + 1e-12);
        // ‖w‖₁ as summed here, made an upper bound of the exact one.
        let l1_up = 1.0 + 2.0 * gamma(self.fi as u64);
        for o in 0..self.fo {
            // The row in f64 first: a plain conversion loop, then dot products over f64 only.
            for (d, &w) in row.iter_mut().zip(&self.w[o * self.fi..(o + 1) * self.fi]) {
                *d = f64::from(w);
            }
            let (s, t, l1) = dots(row, c, r);
            let l1 = l1 * l1_up;
            let b = self.bias.map_or(0.0, |b| f64::from(b[o]));
            let err = g * (l1 * cmax + t) + 2.0 * U * (s.abs() + t + b.abs()) * (1.0 + 1e-12);
            lo[o] = lower64(s - t + b, err);
            hi[o] = upper64(s + t + b, err);
        }
    }
}

#[cfg(test)]
mod tests {
    use num_rational::BigRational;
    use num_traits::FromPrimitive;

    use super::*;

    fn q(x: f64) -> BigRational {
        BigRational::from_f64(x).expect("finite")
    }

    /// Both paths (eight boxes at once, one box) enclose the exact IBP bounds, computed in
    /// rationals, and stay within a hair of them.
    #[test]
    fn blocks_and_single_boxes_enclose_exact_bounds() {
        let (fi, fo) = (37, 11);
        let mut seed = 0x5eed_u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        };
        let w: Vec<f32> = (0..fi * fo).map(|_| rnd() as f32 * 3.0).collect();
        let b: Vec<f32> = (0..fo).map(|_| rnd() as f32).collect();
        let d = Dense::new(&w, Some(&b), fi, fo);
        let n = BLOCK;
        let l: Vec<f64> = (0..n * fi).map(|_| rnd() * 1e3).collect();
        let u: Vec<f64> = l.iter().map(|&v| v + rnd().abs() * 10.0).collect();
        let (mut lo, mut hi) = (vec![0.0; n * fo], vec![0.0; n * fo]);
        d.bound_block(n, &l, &u, &mut lo, &mut hi);
        let (mut c, mut r, mut row) = (vec![0.0; fi], vec![0.0; fi], vec![0.0; fi]);
        for k in 0..n {
            let (li, ui) = (&l[k * fi..(k + 1) * fi], &u[k * fi..(k + 1) * fi]);
            let (mut lo1, mut hi1) = (vec![0.0; fo], vec![0.0; fo]);
            d.bound_box(li, ui, &mut c, &mut r, &mut row, &mut lo1, &mut hi1);
            for o in 0..fo {
                let mut el = q(f64::from(b[o]));
                let mut eh = el.clone();
                for j in 0..fi {
                    let wj = q(f64::from(w[o * fi + j]));
                    let (a, z) = (&wj * q(li[j]), &wj * q(ui[j]));
                    el += a.clone().min(z.clone());
                    eh += a.max(z);
                }
                for (bl, bh) in [(lo[k * fo + o], hi[k * fo + o]), (lo1[o], hi1[o])] {
                    assert!(q(bl) <= el && eh <= q(bh), "box {k} output {o}");
                    let slack = 1e-9 * (1.0 + bh.abs() + bl.abs());
                    assert!(
                        bh - bl
                            <= num_traits::ToPrimitive::to_f64(&(eh.clone() - el.clone()))
                                .unwrap_or(f64::INFINITY)
                                + slack
                    );
                }
            }
        }
    }
}
