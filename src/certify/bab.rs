//! Deciding a property: branch and bound over input boxes, with linear bounds to prove and a
//! counterexample search alongside.
//!
//! For each case of the property, the case's input box is bounded; a box is done when some
//! unsafe constraint provably cannot hold anywhere in it (its linear lower bound exceeds the
//! constraint's threshold); otherwise a gradient search looks for a counterexample from the
//! box's centre, and the box is bisected along the input whose width matters most to the
//! closest-to-proven constraint (the coefficient of the linear bound times the width). Boxes
//! are taken last-in first-out, a batch at a time, bounded in parallel.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::attack::{Rng, Search, Witness};
use super::vnnlib::{Case, Property};
use crate::error::{Result, VramError};
use crate::ibp::cpu::{Boxes, Network};
use crate::ibp::crown::{Crown, RowBounds};

/// Where a run stands, for the progress callback.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Sub-boxes bounded so far.
    pub boxes: u64,
    /// Fraction of the property's input region proven safe (each case weighs the same).
    pub proven: f64,
    pub elapsed: Duration,
}

pub struct Options<'a> {
    pub timeout: Duration,
    /// Worker threads (at least 1).
    pub threads: usize,
    /// Boxes bounded per round.
    pub batch: usize,
    /// Called after every round; `false` cancels the run.
    pub progress: Option<&'a (dyn Fn(&Progress) -> bool + Sync)>,
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Every case is proven unreachable over its whole input box.
    Holds,
    /// A confirmed counterexample.
    Violated(Witness),
    /// Neither, when the run stopped: why.
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub boxes: u64,
    pub proven: f64,
    pub elapsed: Duration,
}

struct SubBox {
    lo: Vec<f64>,
    hi: Vec<f64>,
    /// Fraction of the case's box.
    frac: f64,
    /// Node bounds of the box this one was split from (valid here too).
    outer: Option<Arc<Vec<Boxes>>>,
    /// This box's own bounds, when already computed (while choosing the split).
    bounds: Option<RowBounds>,
}

enum Step {
    Proven,
    Found(Witness),
    Split(Box<(SubBox, SubBox)>),
    /// Cannot be bisected further (every side is one double wide) and not proven.
    Stuck,
}

/// The rows `c` of the constraints whose coefficients are all exact doubles (the others are
/// decided from output bounds only), with the constraint each row stands for.
fn rows_of(case: &Case, n_out: usize) -> (Vec<f64>, Vec<usize>) {
    let (mut rows, mut which) = (Vec::new(), Vec::new());
    for (i, c) in case.unsafe_if.iter().enumerate() {
        let mut r = vec![0.0; n_out];
        let mut exact = true;
        for (j, k) in &c.coeffs {
            match r.get_mut(*j) {
                // One term per output (the parser merges them), each an exact double.
                Some(v) if *v == 0.0 && k.lo == k.hi => *v = k.lo,
                _ => exact = false,
            }
        }
        if exact {
            rows.extend(r);
            which.push(i);
        }
    }
    (rows, which)
}

struct Decider<'a> {
    net: &'a Network<'a>,
    crown: Crown<'a>,
    n_out: usize,
}

/// How far a box is from being proven: the best constraint's lower bound minus its threshold
/// (> 0: proven), or +∞ when the output bounds alone exclude the case.
fn margin(case: &Case, which: &[usize], r: &RowBounds) -> f64 {
    if case.excluded_by(&r.out_lo, &r.out_hi) {
        return f64::INFINITY;
    }
    which
        .iter()
        .enumerate()
        .map(|(k, &i)| r.lower[k] - case.unsafe_if[i].bound.hi)
        .fold(f64::NEG_INFINITY, f64::max)
}

/// The case being decided, and what every box of it needs.
struct CaseRun<'a> {
    case: &'a Case,
    search: Search<'a>,
    rows: Vec<f64>,
    which: Vec<usize>,
}

impl CaseRun<'_> {
    /// The case box's width along input `j` (never 0).
    fn case_width(&self, j: usize) -> f64 {
        self.case
            .input_box
            .get(j)
            .map_or(1.0, |(l, h)| (h - l).max(f64::MIN_POSITIVE))
    }
}

impl Decider<'_> {
    fn bound(
        &self,
        c: &CaseRun<'_>,
        lo: &[f64],
        hi: &[f64],
        outer: Option<&[Boxes]>,
    ) -> Result<RowBounds> {
        self.crown
            .bound_within(lo, hi, &c.rows, c.which.len(), outer)
    }

    fn step(&self, c: &CaseRun<'_>, b: SubBox) -> Result<Step> {
        let r = match b.bounds {
            Some(r) => r,
            None => self.bound(c, &b.lo, &b.hi, b.outer.as_deref().map(|v| v.as_slice()))?,
        };
        if margin(c.case, &c.which, &r) > 0.0 {
            return Ok(Step::Proven);
        }
        let centre: Vec<f64> =
            b.lo.iter()
                .zip(&b.hi)
                .map(|(l, h)| 0.5 * l + 0.5 * h)
                .collect();
        if let Some(w) = c.search.descend(centre, &b.lo, &b.hi, 4) {
            return Ok(Step::Found(w));
        }
        // Candidate inputs to bisect: the two the linear bound is most sensitive to (its
        // coefficient times the width, for the constraint closest to proven) and the widest
        // (relative to the case's box); each is tried, and the one whose worse half comes
        // closest to proven wins. The coefficients alone say how much an input moves the
        // bound, not how much its width loosens the relaxations, and can starve an input
        // forever; the trial costs two bounds per extra candidate and keeps both halves'.
        let n = b.lo.len();
        let best_row = (0..c.which.len()).max_by(|&a, &d| {
            let m = |k: usize| r.lower[k] - c.case.unsafe_if[c.which[k]].bound.hi;
            m(a).total_cmp(&m(d))
        });
        let splittable: Vec<usize> = (0..n)
            .filter(|&j| {
                let mid = 0.5 * b.lo[j] + 0.5 * b.hi[j];
                mid > b.lo[j] && mid < b.hi[j]
            })
            .collect();
        let smear = |j: usize| {
            let coeff = best_row.map_or(1.0, |k| r.input_coeffs[k * n + j].abs());
            coeff * (b.hi[j] - b.lo[j])
        };
        let rel = |j: usize| (b.hi[j] - b.lo[j]) / c.case_width(j);
        let mut by_smear = splittable.clone();
        by_smear.sort_by(|&a, &d| smear(d).total_cmp(&smear(a)));
        let mut candidates: Vec<usize> = by_smear.iter().copied().take(2).collect();
        if let Some(w) = splittable
            .iter()
            .copied()
            .max_by(|&a, &d| rel(a).total_cmp(&rel(d)))
        {
            if !candidates.contains(&w) {
                candidates.push(w);
            }
        }
        if candidates.is_empty() {
            return Ok(Step::Stuck);
        }
        let outer = Some(r.nodes.as_slice());
        let mut chosen: Option<(f64, SubBox, SubBox)> = None;
        for j in candidates {
            let mid = 0.5 * b.lo[j] + 0.5 * b.hi[j];
            let (mut lo2, mut hi1) = (b.lo.clone(), b.hi.clone());
            lo2[j] = mid;
            hi1[j] = mid;
            let ra = self.bound(c, &b.lo, &hi1, outer)?;
            let rb = self.bound(c, &lo2, &b.hi, outer)?;
            let score = margin(c.case, &c.which, &ra).min(margin(c.case, &c.which, &rb));
            if chosen.as_ref().is_none_or(|(s, _, _)| score > *s) {
                let half = b.frac / 2.0;
                let sub = |lo: Vec<f64>, hi: Vec<f64>, bounds: RowBounds| SubBox {
                    lo,
                    hi,
                    frac: half,
                    outer: Some(Arc::clone(&r.nodes)),
                    bounds: Some(bounds),
                };
                chosen = Some((
                    score,
                    sub(b.lo.clone(), hi1, ra),
                    sub(lo2, b.hi.clone(), rb),
                ));
            }
        }
        match chosen {
            Some((_, a, d)) => Ok(Step::Split(Box::new((a, d)))),
            None => Ok(Step::Stuck),
        }
    }
}

/// Decides `prop` over the network (both on the host). Deterministic for a given seed and
/// thread count, up to the time limit.
pub fn decide(net: &Network<'_>, prop: &Property, opts: &Options<'_>) -> Result<Outcome> {
    let n_in = net.nodes.first().map_or(0, |n| n.size() as usize);
    let n_out = net.nodes.last().map_or(0, |n| n.size() as usize);
    if prop.inputs != n_in || prop.outputs != n_out {
        return Err(VramError::invalid(
            "spec",
            format!(
                "the property declares {} inputs and {} outputs; the network has {n_in} and {n_out}",
                prop.inputs, prop.outputs
            ),
        ));
    }
    let start = Instant::now();
    let d = Decider {
        net,
        crown: Crown::new(Network {
            nodes: net.nodes,
            params: net.params.clone(),
        }),
        n_out,
    };
    let mut rng = Rng(opts.seed | 1);
    let (mut boxes, mut proven) = (0u64, 0.0f64);
    let cases = prop.cases.len().max(1) as f64;
    let mut stuck = false;
    let outcome = |verdict, boxes, proven| Outcome {
        verdict,
        boxes,
        proven,
        elapsed: start.elapsed(),
    };
    for (ci, case) in prop.cases.iter().enumerate() {
        let (rows, which) = rows_of(case, d.n_out);
        let run = CaseRun {
            case,
            search: Search {
                net: d.net,
                crown: &d.crown,
                case,
                case_index: ci,
            },
            rows,
            which,
        };
        let search = &run.search;
        let (lo, hi): (Vec<f64>, Vec<f64>) = case.input_box.iter().copied().unzip();
        let sample_box: (Vec<f64>, Vec<f64>) = if case.inner_box.iter().all(|(l, h)| l <= h) {
            case.inner_box.iter().copied().unzip()
        } else {
            (lo.clone(), hi.clone())
        };
        if let Some(w) = search.sample(&sample_box.0, &sample_box.1, 256, 8, &mut rng) {
            return Ok(outcome(Verdict::Violated(w), boxes, proven / cases));
        }
        let mut stack = vec![SubBox {
            lo,
            hi,
            frac: 1.0,
            outer: None,
            bounds: None,
        }];
        let mut case_stuck = 0.0;
        while !stack.is_empty() {
            if start.elapsed() >= opts.timeout {
                let open: f64 = stack.iter().map(|b| b.frac).sum();
                let here = (1.0 - open - case_stuck).max(0.0);
                return Ok(outcome(
                    Verdict::Unknown("time limit reached".into()),
                    boxes,
                    (proven + here) / cases,
                ));
            }
            let take = stack.len().min(opts.batch.max(1));
            let batch: Vec<SubBox> = stack.split_off(stack.len() - take);
            let fracs: Vec<f64> = batch.iter().map(|b| b.frac).collect();
            let results: Vec<Mutex<Option<Result<Step>>>> =
                (0..take).map(|_| Mutex::new(None)).collect();
            let parts = batch.into_iter().zip(&results);
            crate::parallel::for_each(parts, opts.threads, |(b, slot)| {
                let r = d.step(&run, b);
                *slot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(r);
                Ok::<(), VramError>(())
            })?;
            boxes += take as u64;
            for (slot, &frac) in results.into_iter().zip(&fracs) {
                let r = slot
                    .into_inner()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match r.transpose()? {
                    Some(Step::Proven) => {}
                    Some(Step::Found(w)) => {
                        return Ok(outcome(Verdict::Violated(w), boxes, proven / cases));
                    }
                    Some(Step::Split(halves)) => {
                        let (a, b) = *halves;
                        stack.push(a);
                        stack.push(b);
                    }
                    Some(Step::Stuck) | None => {
                        stuck = true;
                        case_stuck += frac;
                    }
                }
            }
            let open: f64 = stack.iter().map(|b| b.frac).sum();
            let done_here = (1.0 - open - case_stuck).max(0.0);
            let progress = Progress {
                boxes,
                proven: (proven + done_here) / cases,
                elapsed: start.elapsed(),
            };
            if let Some(cb) = opts.progress {
                if !cb(&progress) {
                    return Err(VramError::new(
                        crate::error::ErrorKind::Cancelled,
                        "certify: cancelled by the progress callback",
                    ));
                }
            }
        }
        proven += 1.0 - case_stuck;
    }
    if stuck {
        return Ok(outcome(
            Verdict::Unknown(
                "a sub-box one double wide could be neither proven nor refuted".into(),
            ),
            boxes,
            proven / cases,
        ));
    }
    Ok(outcome(Verdict::Holds, boxes, proven / cases))
}
