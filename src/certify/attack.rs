//! Counterexample search: random samples and projected gradient steps on the concrete network
//! (f64), minimising how far the outputs are from the case's unsafe set, many points at a time
//! (on the engine's CPU threads or GPU). A candidate is only a candidate:
//! [`Search::confirm`] decides it with sound bounds of the outputs at that very input.

use super::engine::Engine;
use super::vnnlib::Case;
use crate::error::Result;

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
    /// A standard normal value (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.unit(); // in (0, 1]
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

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
    pub engine: &'a dyn Engine,
    pub case: &'a Case,
    pub case_index: usize,
    /// Each constraint's coefficients (midpoints) over the outputs: `constraints × outputs`.
    rows: Vec<f64>,
}

/// Points scored by how unsafe their outputs are (`≤ 0`: unsafe), or the witness that ended
/// the scoring.
enum Scored {
    Points(Vec<(f64, Vec<f64>)>),
    Found(Witness),
}

/// A point being moved by gradient steps inside its box.
pub struct Start {
    pub x: Vec<f64>,
    pub lo: Vec<f64>,
    pub hi: Vec<f64>,
}

impl<'a> Search<'a> {
    pub fn new(engine: &'a dyn Engine, case: &'a Case, case_index: usize) -> Self {
        let n_out = engine.output_size();
        let mut rows = vec![0.0; case.unsafe_if.len() * n_out];
        for (i, c) in case.unsafe_if.iter().enumerate() {
            for (j, k) in &c.coeffs {
                if let Some(v) = rows.get_mut(i * n_out + j) {
                    *v += 0.5 * k.lo + 0.5 * k.hi;
                }
            }
        }
        Self {
            engine,
            case,
            case_index,
            rows,
        }
    }

    /// Sound check of a candidate: snapped into the case's inner box, its outputs bounded by
    /// interval arithmetic at that point; a witness only if every constraint surely holds.
    pub fn confirm(&self, x: &[f64]) -> Result<Option<Witness>> {
        let inner = &self.case.inner_box;
        if inner.iter().any(|(lo, hi)| lo > hi) {
            return Ok(None);
        }
        let x: Vec<f64> = x
            .iter()
            .zip(inner)
            .map(|(&v, &(lo, hi))| snap(v, lo, hi))
            .collect();
        let (out_lo, out_hi) = self.engine.enclose(&x)?;
        if !self.case.surely_unsafe(&out_lo, &out_hi) {
            return Ok(None);
        }
        Ok(Some(Witness {
            case: self.case_index,
            input: x,
            out_lo,
            out_hi,
        }))
    }

    /// Projected gradient descent on each start's worst constraint, inside its box, all
    /// starts at once, step `s` moving each input by `0.25·decay^s` of its range. The first
    /// confirmed witness (in start order), if any.
    pub fn descend(
        &self,
        mut starts: Vec<Start>,
        steps: usize,
        decay: f64,
    ) -> Result<Option<Witness>> {
        let case = self.case;
        let pick = |y: &[f64]| violation(case, y).1;
        for s in 0..=steps {
            if starts.is_empty() {
                break;
            }
            let points: Vec<f64> = starts.iter().flat_map(|p| p.x.iter().copied()).collect();
            let probes = self.engine.probe(&points, &self.rows, &pick)?;
            for (p, pr) in starts.iter().zip(&probes) {
                if violation(case, &pr.y).0 <= 0.0 {
                    if let Some(w) = self.confirm(&p.x)? {
                        return Ok(Some(w));
                    }
                }
            }
            if s == steps {
                break;
            }
            // Signed steps shrinking from a quarter of the box: robust to the gradient's scale.
            let frac = 0.25 * decay.powi(s as i32);
            let mut next = Vec::with_capacity(starts.len());
            for (mut p, pr) in starts.into_iter().zip(probes) {
                let mut moved = false;
                for j in 0..p.x.len() {
                    let g = pr.grad.get(j).copied().unwrap_or(0.0);
                    let step = frac * (p.hi[j] - p.lo[j]);
                    let nx = (p.x[j] - step * g.signum()).clamp(p.lo[j], p.hi[j]);
                    moved |= nx != p.x[j];
                    p.x[j] = nx;
                }
                if moved {
                    next.push(p);
                }
            }
            starts = next;
        }
        Ok(None)
    }

    /// `samples` random points of `[lo, hi]` and the centre; `steps` gradient steps (shrinking
    /// by 0.93 a step) from the best `starts`. The first confirmed witness, if any.
    pub fn sample(
        &self,
        lo: &[f64],
        hi: &[f64],
        samples: usize,
        starts: usize,
        steps: usize,
        rng: &mut Rng,
    ) -> Result<Option<Witness>> {
        let mut xs: Vec<Vec<f64>> = Vec::with_capacity(samples + 1);
        for s in 0..=samples {
            xs.push(
                lo.iter()
                    .zip(hi)
                    .map(|(&l, &h)| {
                        if s == 0 {
                            0.5 * l + 0.5 * h
                        } else {
                            l + rng.unit() * (h - l)
                        }
                    })
                    .collect(),
            );
        }
        let case = self.case;
        let pick = |y: &[f64]| violation(case, y).1;
        let points: Vec<f64> = xs.iter().flatten().copied().collect();
        let probes = self.engine.probe(&points, &self.rows, &pick)?;
        let mut scored: Vec<(f64, Vec<f64>)> = Vec::with_capacity(xs.len());
        for (x, pr) in xs.into_iter().zip(&probes) {
            let v = violation(case, &pr.y).0;
            if v <= 0.0 {
                if let Some(w) = self.confirm(&x)? {
                    return Ok(Some(w));
                }
            }
            scored.push((v, x));
        }
        scored.sort_by(|a, b| a.0.total_cmp(&b.0));
        scored.truncate(starts);
        let starts = scored
            .into_iter()
            .map(|(_, x)| Start {
                x,
                lo: lo.to_vec(),
                hi: hi.to_vec(),
            })
            .collect();
        self.descend(starts, steps, 0.93)
    }

    /// A population search without gradients: `samples` random points, then `rounds` rounds
    /// in which each of the `keep` best points so far tries `tries` Gaussian moves (standard
    /// deviation 2 % of each input's range, shrinking by 5 % a round), clamped to the box; the
    /// best `keep` of old and new points go on. Where the worst constraint changes from point
    /// to point (a ridge between two constraints), signed gradient steps oscillate across it
    /// and this does not: on ACAS Xu 5_3 property 2, whose unsafe region lies on such a ridge
    /// at a corner of the box (at most 1.5·10⁻⁴ deep, in a float64 NumPy search), 4096 samples
    /// and 100 rounds of 64 × 16 moves found it for 5 seeds of 5 (`bench/acasxu/closest.py`),
    /// where the gradient steps never did. The first confirmed witness, if any.
    #[allow(clippy::too_many_arguments)]
    pub fn wander(
        &self,
        lo: &[f64],
        hi: &[f64],
        samples: usize,
        keep: usize,
        tries: usize,
        rounds: usize,
        rng: &mut Rng,
    ) -> Result<Option<Witness>> {
        let n = lo.len().min(hi.len());
        let case = self.case;
        let pick = |y: &[f64]| violation(case, y).1;
        // Scores the points (`k × n`), confirming any candidate: a witness ends the search.
        let score = |points: Vec<f64>| -> Result<Scored> {
            let probes = self.engine.probe(&points, &self.rows, &pick)?;
            let mut out = Vec::with_capacity(probes.len());
            for (x, pr) in points.chunks_exact(n.max(1)).zip(&probes) {
                let v = violation(case, &pr.y).0;
                if v <= 0.0 {
                    if let Some(w) = self.confirm(x)? {
                        return Ok(Scored::Found(w));
                    }
                }
                out.push((v, x.to_vec()));
            }
            Ok(Scored::Points(out))
        };
        let mut points = Vec::with_capacity(samples * n);
        for _ in 0..samples {
            points.extend((0..n).map(|j| lo[j] + rng.unit() * (hi[j] - lo[j])));
        }
        let mut best = match score(points)? {
            Scored::Points(v) => v,
            Scored::Found(w) => return Ok(Some(w)),
        };
        for r in 0..rounds {
            best.sort_by(|a, b| a.0.total_cmp(&b.0));
            best.truncate(keep);
            let scale = 0.02 * 0.95f64.powi(r as i32);
            let mut points = Vec::with_capacity(best.len() * tries * n);
            for (_, x) in &best {
                for _ in 0..tries {
                    points.extend((0..n).map(|j| {
                        let step = rng.normal() * scale * (hi[j] - lo[j]);
                        (x[j] + step).clamp(lo[j], hi[j])
                    }));
                }
            }
            match score(points)? {
                Scored::Points(v) => best.extend(v),
                Scored::Found(w) => return Ok(Some(w)),
            }
        }
        Ok(None)
    }
}
