//! From the chain's input back to the network's: the GPU's linear bounds are over the
//! normalised box (the chain starts after the input normalisation), and a caller that cuts
//! boxes or chooses splits needs them over the network's own input.
//!
//! A normalisation `z = (clip(x, min, max) − mean) / range` is affine in `x` wherever the clip
//! does nothing, so there a bound `λ·y ≥ B·z + k` is `λ·y ≥ Σ (B_j/range_j)·x_j + k'` with
//! `k' = k − Σ B_j·mean_j/range_j`. The coefficients are rounded to nearest, and what that
//! and the constant's arithmetic can lose is charged to `k'`, so the bound holds exactly.

use super::cpu::normalize_bounds;
use super::graph::{Node, Op};
use super::round::SoundAcc;

/// The chain's input normalisations, per feature, in order (none: the identity).
pub struct InputMap<'a> {
    norms: Vec<Norm<'a>>,
}

struct Norm<'a> {
    min: &'a [f64],
    max: &'a [f64],
    mean: &'a [f64],
    range: &'a [f64],
}

impl Norm<'_> {
    fn len_is(&self, n: usize) -> bool {
        [
            self.min.len(),
            self.max.len(),
            self.mean.len(),
            self.range.len(),
        ]
        .iter()
        .all(|&l| l == n)
    }

    /// The image of the box `[lo, hi]`, rounded outward (the CPU path's own step).
    fn image(&self, lo: &[f64], hi: &[f64]) -> (Vec<f64>, Vec<f64>) {
        (0..lo.len())
            .map(|j| {
                let p = [self.min[j], self.max[j], self.mean[j], self.range[j]];
                normalize_bounds(lo[j], hi[j], p)
            })
            .unzip()
    }

    /// `x` itself: no clip, mean 0, range 1 (ACAS Xu's ONNX files carry one).
    fn is_identity(&self) -> bool {
        self.min.iter().all(|&v| v == f64::NEG_INFINITY)
            && self.max.iter().all(|&v| v == f64::INFINITY)
            && self.mean.iter().all(|&v| v == 0.0)
            && self.range.iter().all(|&v| v == 1.0)
    }

    /// One row's bound over this normalisation's output (`coeffs`, `offset`) as one over its
    /// input box `[lo, hi]` (see the module comment); `-∞` where the clip acts.
    fn pull(&self, coeffs: &mut [f64], offset: f64, lo: &[f64], hi: &[f64]) -> f64 {
        // Relative rounding of one operation, doubled for margin; the smallest subnormal for
        // results near zero.
        let (u, eta) = (f64::EPSILON, f64::from_bits(1));
        let mut acc = SoundAcc::default();
        acc.constant(offset);
        let mut err = 0.0;
        let mut affine = true;
        for (j, c) in coeffs.iter_mut().enumerate() {
            let (b, m, s) = (*c, self.mean[j], self.range[j]);
            affine &= self.min[j] <= lo[j] && hi[j] <= self.max[j];
            let a = b / s;
            *c = a;
            if b == 0.0 {
                continue;
            }
            let reach = lo[j].abs().max(hi[j].abs());
            // Σ (B_j/s_j)·x_j ≥ Σ a_j·x_j − |B_j/s_j − a_j|·max|x_j|.
            err += (u * a.abs() + eta) * reach;
            // B_j·m_j/s_j, within u·|q| + η + (u·|p| + η)/s_j of q.
            let p = b * m;
            let q = p / s;
            acc.constant(-q);
            err += u * q.abs() + eta + (u * p.abs() + eta) / s;
        }
        if !affine || !err.is_finite() {
            return f64::NEG_INFINITY;
        }
        // The error sum is itself rounded (a few dozen operations at most).
        acc.error(err * (1.0 + 1e-6) + eta);
        acc.finish64().0
    }
}

impl<'a> InputMap<'a> {
    /// The map of the chain prefix `prefix` (node indices into `nodes`; flattens and identity
    /// normalisations change nothing and are left out).
    pub fn of(nodes: &'a [Node], prefix: &[usize]) -> Self {
        let norms = prefix
            .iter()
            .filter_map(|&k| match nodes.get(k) {
                Some(Node {
                    op:
                        Op::Normalize {
                            min,
                            max,
                            mean,
                            range,
                        },
                    ..
                }) => Some(Norm {
                    min,
                    max,
                    mean,
                    range,
                }),
                _ => None,
            })
            .filter(|m| !m.is_identity())
            .collect();
        Self { norms }
    }

    /// Turns one row's bound over the normalised box — `coeffs` (`B`, on the chain's input)
    /// and `offset` (`k`) — into one over the network's input box `[lo, hi]`: the coefficients
    /// are divided by each normalisation's range, and the new constant is returned. `-∞` (no
    /// usable constant) where a clip acts on the box, or on any size mismatch; the
    /// coefficients are still rescaled there, for a split heuristic that reads coefficient
    /// times width.
    pub fn to_input(&self, coeffs: &mut [f64], offset: f64, lo: &[f64], hi: &[f64]) -> f64 {
        let n = coeffs.len();
        if lo.len() != n || hi.len() != n || !self.norms.iter().all(|m| m.len_is(n)) {
            return f64::NEG_INFINITY;
        }
        // The input boxes of the second and later normalisations (none in the usual case of
        // one: this runs for every row of every box of a search).
        let mut later: Vec<(Vec<f64>, Vec<f64>)> = Vec::new();
        for m in self.norms.iter().take(self.norms.len().saturating_sub(1)) {
            let (l, h) = later.last().map_or((lo, hi), |(l, h)| (&l[..], &h[..]));
            let next = m.image(l, h);
            later.push(next);
        }
        let mut k = offset;
        for (i, m) in self.norms.iter().enumerate().rev() {
            let (l, h) = match i.checked_sub(1).and_then(|p| later.get(p)) {
                Some((l, h)) => (&l[..], &h[..]),
                None => (lo, hi),
            };
            k = m.pull(coeffs, k, l, h);
        }
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm_node(min: f64, max: f64, mean: f64, range: f64, n: usize) -> Node {
        Node {
            op: Op::Normalize {
                min: vec![min; n],
                max: vec![max; n],
                mean: vec![mean; n],
                range: vec![range; n],
            },
            input: 0,
            shape: vec![n as u64],
        }
    }

    #[test]
    fn the_identity_leaves_the_bound_alone() {
        let map = InputMap::of(&[], &[]);
        let mut c = vec![1.5, -2.0];
        assert_eq!(map.to_input(&mut c, 0.25, &[0.0, 0.0], &[1.0, 1.0]), 0.25);
        assert_eq!(c, vec![1.5, -2.0]);
    }

    #[test]
    fn an_affine_normalisation_moves_the_bound_to_the_input() {
        // z = (x − 3) / 4; bound 2·z0 − z1 + 1 = 0.5·x0 − 0.25·x1 + 1 − 1.5 + 0.75.
        let nodes = vec![norm_node(f64::NEG_INFINITY, f64::INFINITY, 3.0, 4.0, 2)];
        let map = InputMap::of(&nodes, &[0]);
        let mut c = vec![2.0, -1.0];
        let k = map.to_input(&mut c, 1.0, &[0.0, 0.0], &[10.0, 10.0]);
        assert_eq!(c, vec![0.5, -0.25]);
        assert!(k <= 0.25 && k > 0.25 - 1e-12, "{k}");
        // Checked at random points: the new bound never exceeds the old one.
        for i in 0..100 {
            let x = [0.1 * f64::from(i), 10.0 - 0.1 * f64::from(i)];
            let old = 2.0 * (x[0] - 3.0) / 4.0 - (x[1] - 3.0) / 4.0 + 1.0;
            let new = c[0] * x[0] + c[1] * x[1] + k;
            assert!(new <= old + 1e-12, "{new} > {old}");
        }
    }

    #[test]
    fn two_normalisations_compose_and_an_acting_clip_gives_no_constant() {
        // z1 = (x − 1) / 2, z2 = (z1 + 1) / 0.5 = x + 1: the bound z2 ≥ ... with B = 3, k = 0
        // is 3·x + 3.
        let nodes = vec![
            norm_node(f64::NEG_INFINITY, f64::INFINITY, 1.0, 2.0, 1),
            norm_node(f64::NEG_INFINITY, f64::INFINITY, -1.0, 0.5, 1),
        ];
        let map = InputMap::of(&nodes, &[0, 1]);
        let mut c = vec![3.0];
        let k = map.to_input(&mut c, 0.0, &[-2.0], &[5.0]);
        assert_eq!(c, vec![3.0]);
        assert!(k <= 3.0 && k > 3.0 - 1e-12, "{k}");
        let nodes = vec![norm_node(0.0, 1.0, 0.0, 1.0, 1)];
        let map = InputMap::of(&nodes, &[0]);
        let mut c = vec![1.0];
        let k = map.to_input(&mut c, 0.0, &[0.0], &[1.0]);
        assert!(k <= 0.0 && k > -1e-12, "{k}");
        assert_eq!(
            map.to_input(&mut c, 0.0, &[-0.5], &[1.0]),
            f64::NEG_INFINITY
        );
        assert_eq!(
            map.to_input(&mut c, 0.0, &[0.0, 0.0], &[1.0, 1.0]),
            f64::NEG_INFINITY
        );
    }
}
