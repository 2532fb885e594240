//! Counterexample search: random samples and projected gradient steps on the concrete network
//! (f64), minimising how far the outputs are from the case's unsafe set. A candidate is only a
//! candidate: [`confirm`] decides it with sound bounds of the outputs at that very input.

use super::vnnlib::Case;
use crate::ibp::concrete::Trace;
use crate::ibp::cpu::Network;
use crate::ibp::crown::Crown;

/// A confirmed counterexample: an input inside the property's region whose outputs, enclosed
/// soundly, satisfy every unsafe constraint of the case.
#[derive(Debug, Clone, PartialEq)]
pub struct Witness {
    pub case: usize,
    pub input: Vec<f64>,
    /// Sound bounds of the outputs at `input` (a few ulps wide).
    pub out_lo: Vec<f64>,
    pub out_hi: Vec<f64>,
}

/// A small deterministic generator (xorshift64*): the search is reproducible run to run.
pub struct Rng(pub u64);

impl Rng {
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (v >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How unsafe outputs `y` are for `case`: the largest `Σ c·y − d` over its constraints (≤ 0:
/// every constraint holds), with the index of that constraint. Midpoints of the constants.
fn violation(case: &Case, y: &[f64]) -> (f64, usize) {
    let mut worst = (f64::NEG_INFINITY, 0);
    for (i, c) in case.unsafe_if.iter().enumerate() {
        let mid = |k: &super::vnnlib::Constant| 0.5 * k.lo + 0.5 * k.hi;
        let v: f64 = c
            .coeffs
            .iter()
            .map(|(j, k)| mid(k) * y.get(*j).copied().unwrap_or(f64::NAN))
            .sum::<f64>()
            - mid(&c.bound);
        let v = if v.is_nan() { f64::INFINITY } else { v };
        if v > worst.0 {
            worst = (v, i);
        }
    }
    worst
}

/// The f32 nearest to `v` inside `[lo, hi]` (ONNX runtimes take float32 inputs), or `v`
/// itself when no f32 lies there.
fn snap(v: f64, lo: f64, hi: f64) -> f64 {
    let v = v.clamp(lo, hi);
    let f = v as f32;
    for c in [f, f.next_up(), f.next_down()] {
        let d = f64::from(c);
        if d >= lo && d <= hi {
            return d;
        }
    }
    v
}

pub struct Search<'a> {
    pub net: &'a Network<'a>,
    pub crown: &'a Crown<'a>,
    pub case: &'a Case,
    pub case_index: usize,
}

impl Search<'_> {
    /// Sound check of a candidate: snapped into the case's inner box, its outputs bounded by
    /// interval arithmetic at that point; a witness only if every constraint surely holds.
    pub fn confirm(&self, x: &[f64]) -> Option<Witness> {
        let inner = &self.case.inner_box;
        if inner.iter().any(|(lo, hi)| lo > hi) {
            return None;
        }
        let x: Vec<f64> = x
            .iter()
            .zip(inner)
            .map(|(&v, &(lo, hi))| snap(v, lo, hi))
            .collect();
        let b = self.crown.bound(&x, &x, &[], 0).ok()?;
        if !self.case.surely_unsafe(&b.out_lo, &b.out_hi) {
            return None;
        }
        Some(Witness {
            case: self.case_index,
            input: x,
            out_lo: b.out_lo,
            out_hi: b.out_hi,
        })
    }

    fn score(&self, x: &[f64]) -> (f64, usize, Trace) {
        let t = self.net.evaluate(x);
        let (v, i) = violation(self.case, t.output());
        (v, i, t)
    }

    /// Projected gradient descent on the worst constraint, from `x`, inside `[lo, hi]`.
    pub fn descend(
        &self,
        mut x: Vec<f64>,
        lo: &[f64],
        hi: &[f64],
        steps: usize,
    ) -> Option<Witness> {
        let n_out = self.crown.output_size();
        for s in 0..=steps {
            let (v, i, trace) = self.score(&x);
            if v <= 0.0 {
                if let Some(w) = self.confirm(&x) {
                    return Some(w);
                }
            }
            if s == steps {
                break;
            }
            let mut dy = vec![0.0; n_out];
            if let Some(c) = self.case.unsafe_if.get(i) {
                for (j, k) in &c.coeffs {
                    if let Some(d) = dy.get_mut(*j) {
                        *d += 0.5 * k.lo + 0.5 * k.hi;
                    }
                }
            }
            let g = self.net.gradient(&trace, &dy);
            // Signed steps shrinking from a quarter of the box: robust to the gradient's scale.
            let frac = 0.25 * 0.7f64.powi(s as i32);
            let mut moved = false;
            for j in 0..x.len() {
                let step = frac * (hi[j] - lo[j]);
                let nx = (x[j] - step * g[j].signum()).clamp(lo[j], hi[j]);
                moved |= nx != x[j];
                x[j] = nx;
            }
            if !moved {
                break;
            }
        }
        None
    }

    /// `samples` random points of `[lo, hi]` and the centre; gradient steps from the best
    /// few. The first confirmed witness, if any.
    pub fn sample(
        &self,
        lo: &[f64],
        hi: &[f64],
        samples: usize,
        starts: usize,
        rng: &mut Rng,
    ) -> Option<Witness> {
        let mut best: Vec<(f64, Vec<f64>)> = Vec::new();
        for s in 0..=samples {
            let x: Vec<f64> = lo
                .iter()
                .zip(hi)
                .map(|(&l, &h)| {
                    if s == 0 {
                        0.5 * l + 0.5 * h
                    } else {
                        l + rng.unit() * (h - l)
                    }
                })
                .collect();
            let (v, _, _) = self.score(&x);
            if v <= 0.0 {
                if let Some(w) = self.confirm(&x) {
                    return Some(w);
                }
            }
            best.push((v, x));
            if best.len() > 4 * starts.max(1) {
                best.sort_by(|a, b| a.0.total_cmp(&b.0));
                best.truncate(starts.max(1));
            }
        }
        best.sort_by(|a, b| a.0.total_cmp(&b.0));
        best.truncate(starts);
        best.into_iter()
            .find_map(|(_, x)| self.descend(x, lo, hi, 12))
    }
}
