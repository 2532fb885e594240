//! Interval bounds of a dense layer in centre–radius form, written so the compiler can
//! vectorise it: for a box `[l, u]`, `c = (l + u)/2` and `r ≥ max(c − l, u − c)` (rounded up)
//! give an enclosing box `[c − r, c + r]`, and the exact IBP bounds of `W·x + b` over it are
//! `W·c + b ∓ |W|·r`. Two plain dot products per output replace a branch per weight.
//!
//! Rounding: each dot product of `n` terms, summed in any order and with or without fused
//! multiply-adds, is within `γ_{n+2}·Σ|terms|` of exact (Higham §3.1; a fused step rounds
//! once where a product and a sum round twice); `Σ_j |w_j·c_j| ≤ ‖w‖₁·max_j |c_j|` and
//! `Σ_j |w_j|·r_j` is the second dot itself, so the error of both is bounded without a third
//! pass. Two more roundings (the subtraction and the bias) are charged at `2u` of the
//! magnitudes, and `(n + 2)·η` (η the smallest normal f64) covers results that underflow.
//! Boxes with an infinite or NaN end take an exact per-term path instead (`∞ − ∞` would lose
//! the bound's finite side).
//!
//! Speed: many boxes go through a register tile of `R` output rows × `M` boxes, the boxes in
//! SIMD lanes, so each weight is loaded once per `M` boxes and no horizontal sum is needed; the
//! tile's weights are gathered from the sealed tensor on every call (a copy that outlived the
//! call would be weights that no seal covers). A lone box goes row by row, the inputs in lanes.
//! AVX-512 or AVX2 with FMA where the CPU has them (checked at run time), plain SSE2 otherwise.

use super::round::{SoundAcc, gamma};

const U: f64 = f64::EPSILON / 2.0;
/// The absolute slack for results that underflow: the smallest *normal* f64, above the most
/// (half a subnormal step) that one rounding in the subnormal range can lose. A subnormal
/// constant would do too, but on some Intel cores every operation that reads a subnormal
/// takes a slow microcode assist.
const ETA: f64 = f64::MIN_POSITIVE;
/// Lanes of the one-box path's dot products (independent sums fill SIMD lanes and hide the
/// adder's latency; any order is covered by the γ bound).
const LANES: usize = 8;

/// Whether every value is finite, without an early exit (a flag folded over all of them
/// vectorises; a short-circuit test does not).
#[inline(always)]
fn all_finite(v: &[f64]) -> bool {
    v.iter().fold(true, |ok, x| ok & x.is_finite())
}

/// `Σ |w_j|` in `LANES` independent sums (a single running sum would wait on the adder's
/// latency at every term); any order is within the γ bound that [`Dense::charge`] applies.
#[inline(always)]
fn l1(row: &[f32]) -> f64 {
    let mut n = [0.0f64; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for w in chunks {
        for k in 0..LANES {
            n[k] += f64::from(w[k].abs());
        }
    }
    for (k, &w) in tail.iter().enumerate() {
        n[k] += f64::from(w.abs());
    }
    hsum(n)
}

/// The lanes' sum as a tree (three adds deep, not eight).
#[inline(always)]
fn hsum(v: [f64; LANES]) -> f64 {
    ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]))
}

/// A dense layer over the sealed weights (`fo × fi`, row-major) and bias.
pub struct Dense<'a> {
    pub w: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub fi: usize,
    pub fo: usize,
}

/// What one output's bound needs besides its two dot products.
#[derive(Clone, Copy)]
struct Charge {
    /// γ_{fi+2}, slightly inflated.
    g: f64,
    /// An upper bound of the row's ‖w‖₁.
    l1: f64,
    bias: f64,
    /// `(fi + 2)·η`: products and sums that underflow.
    tiny: f64,
}

impl Charge {
    /// Writes the bounds of `W·c ± |W|·r + b` from the computed `s ≈ w·c`, `t ≈ |w|·r`.
    #[inline(always)]
    fn write(self, s: f64, t: f64, cmax: f64, lo: &mut f64, hi: &mut f64) {
        let err = self.g * (self.l1 * cmax + t)
            + 2.0 * U * (s.abs() + t + self.bias.abs()) * (1.0 + 1e-12)
            + self.tiny;
        *lo = below(s - t + self.bias - err);
        *hi = above(s + t + self.bias + err);
    }
}

/// A value ≤ the exact result of the rounded operation that gave `x` (NaN gives −∞). Unlike
/// `next_down`, branch-free, so a row of bounds vectorises: `x` is within `u·|x|` of the
/// exact value, and `x − (2⁻⁵¹·|x| + η)` is at least `3u·|x|` below `x` after its own
/// rounding (and at least η below where `x` is tiny).
#[inline(always)]
fn below(x: f64) -> f64 {
    let v = x - (x.abs() * (2.0 * f64::EPSILON) + ETA);
    if v.is_nan() { f64::NEG_INFINITY } else { v }
}

/// The upper counterpart of [`below`] (NaN gives +∞).
#[inline(always)]
fn above(x: f64) -> f64 {
    let v = x + (x.abs() * (2.0 * f64::EPSILON) + ETA);
    if v.is_nan() { f64::INFINITY } else { v }
}

/// Centre and a rounded-up radius of `[l, u]` (see the module comment): each difference is
/// one rounding, which [`above`] covers; branch-free, so a tile's boxes convert in lanes. A
/// difference that rounds to zero is exactly zero (IEEE subtraction underflows gradually), so
/// a point interval (a ReLU that is off) keeps radius 0: rounding it up would give a radius
/// whose products with weights below 1 are subnormal, each a slow assist on Intel cores.
#[inline(always)]
fn centre_radius(l: f64, u: f64) -> (f64, f64) {
    let m = 0.5 * l + 0.5 * u;
    let d = (m - l).max(u - m);
    (m, if d > 0.0 { above(d) } else { 0.0 })
}

impl<'a> Dense<'a> {
    pub fn new(w: &'a [f32], bias: Option<&'a [f32]>, fi: usize, fo: usize) -> Self {
        Self { w, bias, fi, fo }
    }

    #[inline(always)]
    fn charge(&self, o: usize, l1: f64) -> Charge {
        // ‖w‖₁ as summed (any order), made an upper bound of the exact one.
        let l1_up = 1.0 + 2.0 * gamma(self.fi as u64);
        Charge {
            g: gamma(self.fi as u64 + 2) * (1.0 + 1e-12),
            l1: l1 * l1_up,
            bias: self
                .bias
                .and_then(|b| b.get(o))
                .map_or(0.0, |&b| f64::from(b)),
            tiny: (self.fi as f64 + 2.0) * ETA,
        }
    }

    /// Bounds of `items` boxes (`l`, `u`: items × fi values, item-major) into `lo`, `hi`
    /// (items × fo). Boxes with an infinite or NaN end are bounded term by term.
    pub fn bound(&self, items: usize, l: &[f64], u: &[f64], lo: &mut [f64], hi: &mut [f64]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the CPU has AVX-512F and FMA (checked just above), the only
                // requirement of a `target_feature` function; the body is safe code.
                unsafe { self.bound_avx512(items, l, u, lo, hi) };
                return;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: as above, for AVX2 and FMA.
                unsafe { self.bound_avx2(items, l, u, lo, hi) };
                return;
            }
        }
        self.bound_with::<2, 4>(items, l, u, lo, hi, |a, b, c| a * b + c);
    }

    /// [`Dense::bound`] for AVX-512: tiles of 2 rows × 16 boxes (8 accumulators of 8 lanes; more
    /// rows or boxes measured slower on a Zen 4 core).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn bound_avx512(
        &self,
        items: usize,
        l: &[f64],
        u: &[f64],
        lo: &mut [f64],
        hi: &mut [f64],
    ) {
        self.bound_with::<2, 16>(items, l, u, lo, hi, f64::mul_add);
    }

    /// [`Dense::bound`] for AVX2: tiles of 2 rows × 8 boxes (8 accumulators of 4 lanes).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn bound_avx2(
        &self,
        items: usize,
        l: &[f64],
        u: &[f64],
        lo: &mut [f64],
        hi: &mut [f64],
    ) {
        self.bound_with::<2, 8>(items, l, u, lo, hi, f64::mul_add);
    }

    #[inline(always)]
    fn bound_with<const R: usize, const M: usize>(
        &self,
        items: usize,
        l: &[f64],
        u: &[f64],
        lo: &mut [f64],
        hi: &mut [f64],
        madd: impl Fn(f64, f64, f64) -> f64 + Copy,
    ) {
        let (fi, fo) = (self.fi, self.fo);
        // A plain loop, not an iterator chain: it stays inside this function's target
        // features (an adapter compiled on its own would not be vectorised).
        let mut charges = Vec::with_capacity(fo);
        for (o, row) in self.w.chunks_exact(fi.max(1)).take(fo).enumerate() {
            charges.push(self.charge(o, l1(row)));
        }
        // A tile of boxes only pays when at least half its lanes are real boxes; a box with an
        // infinite or NaN end takes the per-term path, so such batches go box by box.
        let finite = all_finite(l) && all_finite(u);
        let tiled = finite && items.div_ceil(M) * M <= 2 * items;
        let wt = if tiled {
            self.gather::<R>()
        } else {
            Vec::new()
        };
        let (mut c, mut r) = (vec![[0.0f64; M]; fi], vec![[0.0f64; M]; fi]);
        let (mut c1, mut r1) = (vec![0.0f64; fi], vec![0.0f64; fi]);
        let mut b0 = 0;
        while b0 < items {
            let nb = (items - b0).min(M);
            let (l, u) = (&l[b0 * fi..(b0 + nb) * fi], &u[b0 * fi..(b0 + nb) * fi]);
            let (lo, hi) = (
                &mut lo[b0 * fo..(b0 + nb) * fo],
                &mut hi[b0 * fo..(b0 + nb) * fo],
            );
            if tiled {
                self.tile_boxes::<R, M>(nb, l, u, &wt, &charges, &mut c, &mut r, lo, hi, madd);
            } else {
                for (((l, u), lo), hi) in l
                    .chunks_exact(fi.max(1))
                    .zip(u.chunks_exact(fi.max(1)))
                    .zip(lo.chunks_exact_mut(fo.max(1)))
                    .zip(hi.chunks_exact_mut(fo.max(1)))
                {
                    if finite || (all_finite(l) && all_finite(u)) {
                        self.one_box::<R>(l, u, &charges, &mut c1, &mut r1, lo, hi, madd);
                    } else {
                        self.per_term(l, u, lo, hi);
                    }
                }
            }
            b0 += nb;
        }
    }

    /// One box with an infinite or NaN end, term by term ([`SoundAcc`] keeps the finite side
    /// of a bound that `∞ − ∞` would lose).
    fn per_term(&self, l: &[f64], u: &[f64], lo: &mut [f64], hi: &mut [f64]) {
        let rows = self.w.chunks_exact(self.fi.max(1)).take(self.fo);
        for (o, ((row, lo), hi)) in rows.zip(lo.iter_mut()).zip(hi.iter_mut()).enumerate() {
            let mut acc = SoundAcc::default();
            for ((&w, &lj), &uj) in row.iter().zip(l).zip(u) {
                acc.term(f64::from(w), lj, uj);
            }
            if let Some(&b) = self.bias.and_then(|b| b.get(o)) {
                acc.constant(f64::from(b));
            }
            (*lo, *hi) = acc.finish64();
        }
    }

    /// The weights in tiles of `R` rows: tile `k`, input `j` holds `W[k·R + q][j]` for each
    /// `q` (zero past the last row), so the tile's inner loop reads one small array per input.
    fn gather<const R: usize>(&self) -> Vec<[f64; R]> {
        let fi = self.fi;
        let mut wt = vec![[0.0f64; R]; self.fo.div_ceil(R) * fi];
        for (o, row) in self.w.chunks_exact(fi.max(1)).take(self.fo).enumerate() {
            let (k, q) = (o / R, o % R);
            for (slot, &w) in wt[k * fi..(k + 1) * fi].iter_mut().zip(row) {
                slot[q] = f64::from(w);
            }
        }
        wt
    }

    /// Up to `M` boxes at once (the lanes past `nb` are zero boxes whose results are dropped).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn tile_boxes<const R: usize, const M: usize>(
        &self,
        nb: usize,
        l: &[f64],
        u: &[f64],
        wt: &[[f64; R]],
        charges: &[Charge],
        c: &mut [[f64; M]],
        r: &mut [[f64; M]],
        lo: &mut [f64],
        hi: &mut [f64],
        madd: impl Fn(f64, f64, f64) -> f64 + Copy,
    ) {
        let (fi, fo) = (self.fi, self.fo);
        let mut cmax = [0.0f64; M];
        for (j, (cj, rj)) in c.iter_mut().zip(r.iter_mut()).enumerate() {
            for b in 0..M {
                (cj[b], rj[b]) = if b < nb {
                    centre_radius(l[b * fi + j], u[b * fi + j])
                } else {
                    (0.0, 0.0)
                };
                cmax[b] = cmax[b].max(cj[b].abs());
            }
        }
        for (k, tile) in wt.chunks_exact(fi.max(1)).enumerate() {
            let (mut s, mut t) = ([[0.0f64; M]; R], [[0.0f64; M]; R]);
            for ((cj, rj), wj) in c.iter().zip(r.iter()).zip(tile) {
                for q in 0..R {
                    let (w, a) = (wj[q], wj[q].abs());
                    for b in 0..M {
                        s[q][b] = madd(cj[b], w, s[q][b]);
                        t[q][b] = madd(rj[b], a, t[q][b]);
                    }
                }
            }
            for q in 0..R {
                let o = k * R + q;
                let Some(&ch) = charges.get(o) else { break };
                // All lanes at once (vectorised), then the real boxes' out to their rows.
                let (mut lv, mut hv) = ([0.0f64; M], [0.0f64; M]);
                for b in 0..M {
                    ch.write(s[q][b], t[q][b], cmax[b], &mut lv[b], &mut hv[b]);
                }
                for b in 0..nb {
                    let at = b * fo + o;
                    (lo[at], hi[at]) = (lv[b], hv[b]);
                }
            }
        }
    }

    /// One box, `R` rows at a time (independent sums hide the adder's latency), each row's
    /// two dot products over the inputs in lanes.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn one_box<const R: usize>(
        &self,
        l: &[f64],
        u: &[f64],
        charges: &[Charge],
        c: &mut [f64],
        r: &mut [f64],
        lo: &mut [f64],
        hi: &mut [f64],
        madd: impl Fn(f64, f64, f64) -> f64 + Copy,
    ) {
        let (fi, fo) = (self.fi, self.fo);
        let mut cmax = 0.0f64;
        for (((cj, rj), &lj), &uj) in c.iter_mut().zip(r.iter_mut()).zip(l).zip(u) {
            (*cj, *rj) = centre_radius(lj, uj);
            cmax = cmax.max(cj.abs());
        }
        let full = fi - fi % LANES;
        for o0 in (0..fo).step_by(R) {
            // Rows past the last one are empty: their sums stay zero and are not written.
            let rows: [&[f32]; R] = std::array::from_fn(|q| {
                self.w.get((o0 + q) * fi..(o0 + q + 1) * fi).unwrap_or(&[])
            });
            let (mut s, mut t) = ([[0.0f64; LANES]; R], [[0.0f64; LANES]; R]);
            for j0 in (0..full).step_by(LANES) {
                let (Some(cc), Some(rr)) = (c.get(j0..j0 + LANES), r.get(j0..j0 + LANES)) else {
                    break;
                };
                for q in 0..R {
                    let Some(w) = rows[q].get(j0..j0 + LANES) else {
                        continue;
                    };
                    for k in 0..LANES {
                        let w = f64::from(w[k]);
                        s[q][k] = madd(w, cc[k], s[q][k]);
                        t[q][k] = madd(w.abs(), rr[k], t[q][k]);
                    }
                }
            }
            for q in 0..R {
                for j in full..rows[q].len() {
                    let w = f64::from(rows[q][j]);
                    s[q][0] = madd(w, c[j], s[q][0]);
                    t[q][0] = madd(w.abs(), r[j], t[q][0]);
                }
                let o = o0 + q;
                if let (Some(ch), Some(lo), Some(hi)) =
                    (charges.get(o), lo.get_mut(o), hi.get_mut(o))
                {
                    ch.write(hsum(s[q]), hsum(t[q]), cmax, lo, hi);
                }
            }
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

    /// Every path (tiles of boxes, one box; the CPU's SIMD and the plain one) encloses the
    /// exact IBP bounds, computed in rationals, and stays within a hair of them.
    #[test]
    fn every_path_encloses_exact_bounds() {
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
        let n = 41;
        let l: Vec<f64> = (0..n * fi).map(|_| rnd() * 1e3).collect();
        let u: Vec<f64> = l.iter().map(|&v| v + rnd().abs() * 10.0).collect();
        let exact: Vec<(BigRational, BigRational)> = (0..n * fo)
            .map(|at| {
                let (k, o) = (at / fo, at % fo);
                let mut el = q(f64::from(b[o]));
                let mut eh = el.clone();
                for j in 0..fi {
                    let wj = q(f64::from(w[o * fi + j]));
                    let (a, z) = (&wj * q(l[k * fi + j]), &wj * q(u[k * fi + j]));
                    el += a.clone().min(z.clone());
                    eh += a.max(z);
                }
                (el, eh)
            })
            .collect();
        type Path<'p> = &'p dyn Fn(usize, &[f64], &[f64], &mut [f64], &mut [f64]);
        let paths: [(&str, Path<'_>); 3] = [
            ("dispatched", &|k, l, u, lo, hi| d.bound(k, l, u, lo, hi)),
            ("plain tiles", &|k, l, u, lo, hi| {
                d.bound_with::<2, 4>(k, l, u, lo, hi, |a, b, c| a * b + c)
            }),
            ("fused tiles", &|k, l, u, lo, hi| {
                d.bound_with::<3, 5>(k, l, u, lo, hi, f64::mul_add)
            }),
        ];
        for (name, path) in paths {
            // 1 and 2 boxes go one by one, the rest in tiles with and without padding lanes.
            for items in [1usize, 2, 3, 8, 16, 19, 41] {
                let (mut lo, mut hi) = (vec![0.0; items * fo], vec![0.0; items * fo]);
                path(items, &l[..items * fi], &u[..items * fi], &mut lo, &mut hi);
                for at in 0..items * fo {
                    let (el, eh) = &exact[at];
                    let (bl, bh) = (lo[at], hi[at]);
                    assert!(
                        q(bl) <= *el && *eh <= q(bh),
                        "{name}, {items} boxes, at {at}"
                    );
                    let slack = 1e-9 * (1.0 + bh.abs() + bl.abs());
                    let width =
                        num_traits::ToPrimitive::to_f64(&(eh - el)).unwrap_or(f64::INFINITY);
                    assert!(bh - bl <= width + slack, "{name}, {items} boxes, at {at}");
                }
            }
        }
    }
}
