//! Cutting an open box down to where the property can still fail.
//!
//! A box's linear bound of a constraint's row holds at every point of the box:
//! `λ·y ≥ a·x + k`. The constraint is unsafe where `λ·y ≤ t`, so every unsafe point has
//! `a·x + k ≤ t`, and along one input `j`
//!
//! ```text
//!   a_j·x_j ≤ t − k − Σ_{i≠j} a_i·x_i ≤ t − k − Σ_{i≠j} min(a_i·lo_i, a_i·hi_i)
//! ```
//!
//! which bounds `x_j` from one side (the step of interval constraint propagation that makes a
//! box consistent with a linear constraint). Cutting every input by every exact row of a case
//! (a conjunction: an unsafe point meets them all) leaves a box that holds every unsafe point
//! of the old one; the part cut away is proven. Near the edge of the unsafe region, where a
//! bisection would only ever prove half of a box, one cut proves the whole safe side at once.
//!
//! The right-hand side is summed with [`SoundAcc`] and rounded up, the quotient rounded
//! outward, so the cut never removes a point where the bound does not prove the property.

use crate::ibp::round::{SoundAcc, above, below};

/// One row's linear bound over the box, and the threshold at or under which it is unsafe.
pub struct Row<'a> {
    /// `a`, one per input.
    pub coeffs: &'a [f64],
    /// `k`.
    pub offset: f64,
    /// `t`, an upper bound of the constraint's threshold.
    pub threshold: f64,
}

/// Rounds of cuts: a cut along one input can let another row cut along a second, a few times.
const SWEEPS: usize = 2;

/// Shrinks `[lo, hi]` to a box that holds every point of it where all `rows` can be unsafe.
/// `false`: no such point (the whole box is proven). A row with a non-finite value or the
/// wrong length cuts nothing.
pub fn cut(lo: &mut [f64], hi: &mut [f64], rows: &[Row<'_>]) -> bool {
    let n = lo.len().min(hi.len());
    for _ in 0..SWEEPS {
        for row in rows {
            let usable = row.coeffs.len() == n
                && row.offset.is_finite()
                && row.threshold.is_finite()
                && row.coeffs.iter().all(|a| a.is_finite());
            if !usable {
                continue;
            }
            for j in 0..n {
                let a_j = row.coeffs[j];
                if a_j == 0.0 {
                    continue;
                }
                // An upper bound of t − k − Σ_{i≠j} min(a_i·x_i).
                let mut acc = SoundAcc::default();
                acc.constant(row.threshold);
                acc.constant(-row.offset);
                for i in (0..n).filter(|&i| i != j) {
                    acc.term(-row.coeffs[i], lo[i], hi[i]);
                }
                let rhs = acc.finish64().1;
                if !rhs.is_finite() {
                    continue;
                }
                if a_j > 0.0 {
                    let h = above(rhs / a_j);
                    if h < hi[j] {
                        hi[j] = h;
                    }
                } else {
                    let l = below(rhs / a_j);
                    if l > lo[j] {
                        lo[j] = l;
                    }
                }
                if lo[j] > hi[j] {
                    return false;
                }
            }
        }
    }
    true
}

/// The share of `[lo, hi]` that `[lo2, hi2]` (inside it) keeps, by volume; inputs of width 0
/// count as kept.
pub fn kept_share(lo: &[f64], hi: &[f64], lo2: &[f64], hi2: &[f64]) -> f64 {
    lo.iter()
        .zip(hi)
        .zip(lo2.iter().zip(hi2))
        .map(|((l, h), (l2, h2))| {
            let w = h - l;
            if w > 0.0 {
                ((h2 - l2) / w).clamp(0.0, 1.0)
            } else {
                1.0
            }
        })
        .product()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), values in [-1, 1).
    fn rng(state: &mut u64) -> f64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        (*state >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    #[test]
    fn one_row_cuts_to_the_half_space() {
        // x0 + x1 ≥ ... : unsafe where x0 + x1 + 0 ≤ 0.5 on [0,1]²: x0 ≤ 0.5, x1 ≤ 0.5.
        let (mut lo, mut hi) = (vec![0.0, 0.0], vec![1.0, 1.0]);
        let rows = [Row {
            coeffs: &[1.0, 1.0],
            offset: 0.0,
            threshold: 0.5,
        }];
        assert!(cut(&mut lo, &mut hi, &rows));
        assert_eq!(lo, vec![0.0, 0.0]);
        assert!(hi[0] >= 0.5 && hi[0] < 0.5 + 1e-12, "{hi:?}");
        assert!(hi[1] >= 0.5 && hi[1] < 0.5 + 1e-12, "{hi:?}");
        // Negative coefficients raise the lower ends: −x0 ≤ −0.75 ⇒ x0 ≥ 0.75.
        let (mut lo, mut hi) = (vec![0.0, 0.0], vec![1.0, 1.0]);
        let rows = [Row {
            coeffs: &[-1.0, 0.0],
            offset: 0.0,
            threshold: -0.75,
        }];
        assert!(cut(&mut lo, &mut hi, &rows));
        assert!(
            lo[0] <= 0.75 && lo[0] > 0.75 - 1e-12 && hi[0] == 1.0,
            "{lo:?}"
        );
        assert_eq!((lo[1], hi[1]), (0.0, 1.0));
    }

    #[test]
    fn a_proven_box_is_empty_and_a_conjunction_cuts_more_than_each_row() {
        let (mut lo, mut hi) = (vec![0.0, 0.0], vec![1.0, 1.0]);
        let rows = [Row {
            coeffs: &[1.0, 1.0],
            offset: 0.25,
            threshold: 0.0,
        }];
        assert!(
            !cut(&mut lo, &mut hi, &rows),
            "x0 + x1 + 0.25 > 0 everywhere"
        );
        // x0 ≤ 0.5 from the first row, then x1 ≥ 0.6 − 0.5·x0... with x0 ≤ 0.5: second row
        // −x0 − x1 ≤ −0.6 ⇒ x1 ≥ 0.6 − x0 ≥ 0.1.
        let (mut lo, mut hi) = (vec![0.0, 0.0], vec![1.0, 1.0]);
        let rows = [
            Row {
                coeffs: &[1.0, 0.0],
                offset: 0.0,
                threshold: 0.5,
            },
            Row {
                coeffs: &[-1.0, -1.0],
                offset: 0.0,
                threshold: -0.6,
            },
        ];
        assert!(cut(&mut lo, &mut hi, &rows));
        assert!(
            hi[0] <= 0.5 + 1e-12 && lo[1] >= 0.1 - 1e-12,
            "{lo:?} {hi:?}"
        );
    }

    #[test]
    fn unusable_rows_cut_nothing() {
        for (coeffs, offset, threshold) in [
            (vec![1.0, f64::NAN], 0.0, 0.0),
            (vec![1.0, 1.0], f64::NEG_INFINITY, 0.0),
            (vec![1.0, 1.0], 0.0, f64::INFINITY),
            (vec![1.0], 0.0, 0.0),
        ] {
            let (mut lo, mut hi) = (vec![0.0, 0.0], vec![1.0, 1.0]);
            let rows = [Row {
                coeffs: &coeffs,
                offset,
                threshold,
            }];
            assert!(cut(&mut lo, &mut hi, &rows));
            assert_eq!((lo, hi), (vec![0.0, 0.0], vec![1.0, 1.0]));
        }
    }

    /// Every point cut away proves the property: checked exactly (the products and sums of
    /// doubles here are exact in i128 after scaling by powers of two) on random rows, boxes
    /// and points.
    #[test]
    fn nothing_unsafe_is_ever_cut_away() {
        // Values that are multiples of 2^-20 in [-4, 4): every product a·x is a multiple of
        // 2^-40 below 2^4, every sum exact in i128 units of 2^-40.
        let grid = |v: f64| (v * 4.0 * (1u64 << 20) as f64).round() / (1u64 << 20) as f64;
        let units = |v: f64| (v * (1u64 << 40) as f64) as i128;
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let (mut cuts, mut checked) = (0, 0);
        for _ in 0..400 {
            let n = 2 + (rng(&mut s).abs() * 4.0) as usize;
            let rows_n = 1 + (rng(&mut s).abs() * 3.0) as usize;
            let coeffs: Vec<Vec<f64>> = (0..rows_n)
                .map(|_| (0..n).map(|_| grid(rng(&mut s))).collect())
                .collect();
            let ks: Vec<f64> = (0..rows_n).map(|_| grid(rng(&mut s))).collect();
            let ts: Vec<f64> = (0..rows_n).map(|_| grid(rng(&mut s))).collect();
            let lo0: Vec<f64> = (0..n).map(|_| grid(rng(&mut s) * 0.25) - 0.25).collect();
            let hi0: Vec<f64> = lo0
                .iter()
                .map(|l| l + grid(rng(&mut s).abs() * 0.5))
                .collect();
            let rows: Vec<Row<'_>> = (0..rows_n)
                .map(|r| Row {
                    coeffs: &coeffs[r],
                    offset: ks[r],
                    threshold: ts[r],
                })
                .collect();
            let (mut lo, mut hi) = (lo0.clone(), hi0.clone());
            let kept = cut(&mut lo, &mut hi, &rows);
            if lo != lo0 || hi != hi0 || !kept {
                cuts += 1;
            }
            for _ in 0..200 {
                let x: Vec<f64> = lo0
                    .iter()
                    .zip(&hi0)
                    .map(|(l, h)| grid(l + (h - l) * rng(&mut s).abs()).clamp(*l, *h))
                    .collect();
                let unsafe_everywhere = rows.iter().all(|r| {
                    let ax: i128 = r
                        .coeffs
                        .iter()
                        .zip(&x)
                        .map(|(a, v)| (units(*a) * units(*v)) >> 40)
                        .sum();
                    ax + units(r.offset) <= units(r.threshold)
                });
                if unsafe_everywhere {
                    checked += 1;
                    let inside = kept
                        && x.iter()
                            .zip(lo.iter().zip(&hi))
                            .all(|(v, (l, h))| l <= v && v <= h);
                    assert!(
                        inside,
                        "an unsafe point {x:?} was cut from {lo0:?}..{hi0:?}"
                    );
                }
            }
        }
        assert!(
            cuts > 100 && checked > 1000,
            "{cuts} cuts, {checked} points"
        );
    }
}
