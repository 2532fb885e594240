//! Deciding a property: branch and bound over input boxes, with linear bounds to prove and a
//! counterexample search alongside; one algorithm on the CPU or the GPU ([`Engine`]).
//!
//! For each case of the property, the case's input box is bounded; a box is done when some
//! unsafe constraint provably cannot hold anywhere in it (its linear lower bound exceeds the
//! constraint's threshold). Boxes are taken last-in first-out, a round at a time: each open
//! box is first cut down to the part where every constraint's linear bound still allows the
//! unsafe side ([`contract`]; the rest is proven), gets a few gradient steps from its centre
//! (a counterexample search), and is then bisected. The input to bisect is chosen by trying
//! candidates — the two the linear bound is most sensitive to (coefficient times width, for the
//! constraint closest to proven, among the inputs at least 1/[`ASPECT`] as wide as the widest,
//! each relative to the case's box) and the widest relative to the case's box — and keeping the
//! split whose worse half comes closest to proven: every candidate's halves of every box of
//! the round are bounded in one batch, and the chosen halves keep their bounds. Two guards
//! keep that choice from a trap: a half keeps its parent's linear bound of a row where it is
//! the better one over the half ([`inherit`]), so no split looks worse than none; and when the
//! best split gains less than [`STALL`] of the parent's margin, the widest input is split
//! instead. (ACAS Xu 3_3 property 2, on the 2-core VM: 81 % of the region proven after 30,
//! 60 and 120 s without either, 90 % after 60 s with the second only, holds in 38 s with
//! both.) (Measured on
//! ACAS Xu 3_3 p9 and 1_1 p6 on the 2-core VM: trying three or five inputs by sensitivity
//! instead of two takes several times the boxes; scoring a split by its better half or by the
//! sum of both halves' margins saves under 10 %.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::attack::{Rng, Search, Start, Witness};
use super::contract::{self, Row};
use super::engine::{Engine, Job};
use super::vnnlib::{Case, Property};
use crate::error::Result;
use crate::ibp::crown::RowBounds;

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
    /// Open boxes taken per round (0: the engine's choice).
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
    /// Of `elapsed`, the time spent bounding sub-boxes.
    pub bounding: Duration,
    /// Of `elapsed`, the time spent searching for counterexamples (sampling and gradient
    /// steps on the concrete network).
    pub searching: Duration,
}

/// An open box, already bounded.
struct SubBox {
    lo: Vec<f64>,
    hi: Vec<f64>,
    /// Fraction of the case's box.
    frac: f64,
    bounds: RowBounds,
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

/// How far a box is from being proven: the best constraint's lower bound minus its threshold
/// (> 0: proven), or +∞ when the output bounds alone exclude the case.
fn margin(case: &Case, which: &[usize], r: &RowBounds) -> f64 {
    margin_of(case, which, &r.lower, &r.out_lo, &r.out_hi)
}

/// [`margin`] from a bound's parts: its rows' lower bounds and the output bounds.
fn margin_of(case: &Case, which: &[usize], lower: &[f64], out_lo: &[f64], out_hi: &[f64]) -> f64 {
    if case.excluded_by(out_lo, out_hi) {
        return f64::INFINITY;
    }
    which
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            lower.get(k).copied().unwrap_or(f64::NEG_INFINITY) - case.unsafe_if[i].bound.hi
        })
        .fold(f64::NEG_INFINITY, f64::max)
}

/// One case's branch and bound: its open boxes and the share found stuck.
struct CaseState<'a> {
    run: CaseRun<'a>,
    search: Search<'a>,
    stack: Vec<SubBox>,
    stuck: f64,
}

/// The case being decided, and what every box of it needs.
struct CaseRun<'a> {
    case: &'a Case,
    engine: &'a dyn Engine,
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

    fn margin(&self, r: &RowBounds) -> f64 {
        margin(self.case, &self.which, r)
    }

    /// Whether a bound (its parts, as [`margin_of`] takes them) proves the case on its box.
    fn proven(&self, lower: &[f64], out_lo: &[f64], out_hi: &[f64]) -> bool {
        margin_of(self.case, &self.which, lower, out_lo, out_hi) > 0.0
    }

    /// The inputs worth trying to bisect `b` along (see the module comment).
    fn candidates(&self, b: &SubBox) -> Vec<usize> {
        let r = &b.bounds;
        let n = b.lo.len();
        let best_row = (0..self.which.len()).max_by(|&a, &d| {
            let m = |k: usize| {
                r.lower.get(k).copied().unwrap_or(f64::NEG_INFINITY)
                    - self.case.unsafe_if[self.which[k]].bound.hi
            };
            m(a).total_cmp(&m(d))
        });
        let splittable = splittable(b);
        let smear = |j: usize| {
            let coeff = best_row.map_or(1.0, |k| {
                r.input_coeffs.get(k * n + j).copied().unwrap_or(0.0).abs()
            });
            coeff * (b.hi[j] - b.lo[j])
        };
        let rel = |j: usize| (b.hi[j] - b.lo[j]) / self.case_width(j);
        // The coefficients alone say how much an input moves the bound, not how much its
        // width loosens the relaxations, and can starve an input forever: the widest is tried
        // too, and an input already ASPECT times thinner (relative to the case's box) than
        // the widest is not tried by its coefficient. Without that bound, ACAS Xu 3_7
        // property 1 bisected three inputs down to 10^-15 of their range while two stayed at
        // an eighth and a quarter, whose width was what kept the relaxation loose: a timeout
        // at 116 s on the H200 (29.6 M boxes); with it, decided in 3.4 s on 2 CPU cores.
        let floor = splittable.iter().map(|&j| rel(j)).fold(0.0, f64::max) / ASPECT;
        let mut by_smear: Vec<usize> = splittable
            .iter()
            .copied()
            .filter(|&j| rel(j) >= floor)
            .collect();
        by_smear.sort_by(|&a, &d| smear(d).total_cmp(&smear(a)));
        let mut c: Vec<usize> = by_smear.into_iter().take(2).collect();
        if let Some(w) = self.widest(b) {
            if !c.contains(&w) {
                c.push(w);
            }
        }
        c
    }

    /// The splittable input widest relative to the case's box.
    fn widest(&self, b: &SubBox) -> Option<usize> {
        let rel = |j: usize| (b.hi[j] - b.lo[j]) / self.case_width(j);
        splittable(b)
            .into_iter()
            .max_by(|&a, &d| rel(a).total_cmp(&rel(d)))
    }

    /// `b` cut down to where the case can still be unsafe ([`contract`]), or `None` when no
    /// point of it can be.
    fn cut(&self, mut b: SubBox) -> Option<SubBox> {
        let r = &b.bounds;
        let n = b.lo.len();
        if r.offsets.len() != self.which.len() {
            return Some(b);
        }
        let rows: Vec<Row<'_>> = self
            .which
            .iter()
            .enumerate()
            .filter_map(|(k, &i)| {
                Some(Row {
                    coeffs: r.input_coeffs.get(k * n..(k + 1) * n)?,
                    offset: *r.offsets.get(k)?,
                    threshold: self.case.unsafe_if.get(i)?.bound.hi,
                })
            })
            .collect();
        let (mut lo, mut hi) = (b.lo.clone(), b.hi.clone());
        if !contract::cut(&mut lo, &mut hi, &rows) {
            return None;
        }
        b.frac *= contract::kept_share(&b.lo, &b.hi, &lo, &hi);
        b.lo = lo;
        b.hi = hi;
        Some(b)
    }

    fn bound_one(&self, lo: &[f64], hi: &[f64]) -> Result<Option<RowBounds>> {
        let job = Job {
            lo,
            hi,
            outer: None,
            outer_slot: None,
        };
        Ok(self
            .engine
            .bound(
                std::slice::from_ref(&job),
                &self.rows,
                self.which.len(),
                &|l, lo, hi| self.proven(l, lo, hi),
            )?
            .pop())
    }
}

/// The inputs along which `b` can still be bisected (its midpoint a double strictly inside).
fn splittable(b: &SubBox) -> Vec<usize> {
    (0..b.lo.len().min(b.hi.len()))
        .filter(|&j| {
            let mid = 0.5 * b.lo[j] + 0.5 * b.hi[j];
            mid > b.lo[j] && mid < b.hi[j]
        })
        .collect()
}

/// One candidate bisection of an open box: its two halves (lo, hi).
struct Split {
    parent: usize,
    /// Along the parent's widest input ([`CaseRun::widest`]).
    widest: bool,
    lower: (Vec<f64>, Vec<f64>),
    upper: (Vec<f64>, Vec<f64>),
}

/// A candidate split with its halves' bounds.
type Tried = (Split, RowBounds, RowBounds);

/// Where a run's time went, besides the whole.
#[derive(Default)]
struct Clock {
    bounding: std::cell::Cell<Duration>,
    searching: std::cell::Cell<Duration>,
}

/// What happened to a round's boxes.
enum Round {
    Continue,
    Found(Witness),
}

/// One counterexample search of a case: random samples, then the best as starts of 60 slowly
/// shrinking gradient steps. Measured on ACAS Xu 1_9 property 7 (a small unsafe region) over
/// ten seeds, on the 2-core VM: 4096 samples / 64 starts / 40 steps found it in 2 of 10 runs,
/// 1024 / 256 / 60 in 5 of 10 (about 0.1 s a search); the restarts below do the rest.
const ATTACK: (usize, usize, usize) = (1024, 256, 60);

/// The population search ([`Search::wander`]): samples, points kept, moves per point, rounds
/// (about 10⁵ evaluations of the network). Run in the fresh searches from [`WANDER_FROM`]
/// boxes on, where a run is already long (on the H200, ACAS Xu 5_3 property 2 is found at
/// 126 000 boxes, 2.1 s after the start).
const WANDER: (usize, usize, usize, usize) = (4096, 64, 16, 100);
const WANDER_FROM: u64 = 1 << 16;

/// How much thinner than the widest input (each relative to the case's box) an input may be
/// and still be bisected for its coefficient ([`CaseRun::candidates`]). On the 2-core VM, 60 s
/// of ACAS Xu 3_3 property 2 proved 61 % of the region with 2^4, 81 % with 2^6, 74 % with 2^8
/// and 65 % without the bound; 3_7 property 1 took 3.4 s with 2^6 and 21 s with 2^10.
const ASPECT: f64 = 64.0;

/// At most this many open boxes of a round start gradient steps (those furthest from
/// proven). With every open box of a GPU round (2048) as a start, the steps took 23.9 s of
/// ACAS Xu 4_2 property 2's 115 s on the H200; with 256, 10.3 s. (The CPU takes 32 boxes a
/// round per thread: on up to 8 threads, every one starts.)
const DESCENT_STARTS: usize = 256;

/// A split's gain (its worse half's margin over its parent's), relative to the parent's
/// margin, under which the split counts as stalled ([`step_round`]).
const STALL: f64 = 0.01;

/// One counterexample search of `case` (index `ci`) with [`ATTACK`]'s budget (and, when
/// `deep`, [`WANDER`]'s after it), inside the case's inner box (the VNN-LIB box itself where
/// it holds no float32).
fn attack(
    engine: &dyn Engine,
    case: &Case,
    ci: usize,
    deep: bool,
    rng: &mut Rng,
) -> Result<Option<Witness>> {
    let (lo, hi): (Vec<f64>, Vec<f64>) = if case.inner_box.iter().all(|(l, h)| l <= h) {
        case.inner_box.iter().copied().unzip()
    } else {
        case.input_box.iter().copied().unzip()
    };
    let (samples, starts, steps) = ATTACK;
    let search = Search::new(engine, case, ci);
    if let Some(w) = search.sample(&lo, &hi, samples, starts, steps, rng)? {
        return Ok(Some(w));
    }
    if !deep {
        return Ok(None);
    }
    let (samples, keep, tries, rounds) = WANDER;
    search.wander(&lo, &hi, samples, keep, tries, rounds, rng)
}

/// Decides `prop` on `engine`. Deterministic for a given seed and engine, up to the time
/// limit.
pub fn decide(engine: &dyn Engine, prop: &Property, opts: &Options<'_>) -> Result<Outcome> {
    let (n_in, n_out) = (engine.input_size(), engine.output_size());
    if prop.inputs != n_in || prop.outputs != n_out {
        return Err(crate::error::VramError::invalid(
            "spec",
            format!(
                "the property declares {} inputs and {} outputs; the network has {n_in} and {n_out}",
                prop.inputs, prop.outputs
            ),
        ));
    }
    let start = Instant::now();
    let per_round = if opts.batch == 0 {
        engine.parents_per_round()
    } else {
        opts.batch
    };
    let mut rng = Rng(opts.seed | 1);
    let mut boxes = 0u64;
    let cases = prop.cases.len().max(1) as f64;
    let clock = Clock::default();
    let outcome = |verdict, boxes, proven| Outcome {
        verdict,
        boxes,
        proven,
        elapsed: start.elapsed(),
        bounding: clock.bounding.get(),
        searching: clock.searching.get(),
    };
    // Every case's counterexample search first: the cases are a disjunction, and a witness
    // for a later case must not wait for an earlier case's proof (ACAS Xu 2_9 property 8).
    for (ci, case) in prop.cases.iter().enumerate() {
        if start.elapsed() >= opts.timeout {
            return Ok(outcome(
                Verdict::Unknown("time limit reached".into()),
                boxes,
                0.0,
            ));
        }
        let t0 = Instant::now();
        let found = attack(engine, case, ci, false, &mut rng)?;
        clock.searching.set(clock.searching.get() + t0.elapsed());
        if let Some(w) = found {
            return Ok(outcome(Verdict::Violated(w), boxes, 0.0));
        }
    }
    // Then every case's branch and bound, a round of each in turn: a case that is hard to
    // prove must not keep the search (whose gradient steps run in every round) from the others.
    let mut open_cases: Vec<CaseState<'_>> = Vec::with_capacity(prop.cases.len());
    for (ci, case) in prop.cases.iter().enumerate() {
        let (rows, which) = rows_of(case, n_out);
        let run = CaseRun {
            case,
            engine,
            rows,
            which,
        };
        let (lo, hi): (Vec<f64>, Vec<f64>) = case.input_box.iter().copied().unzip();
        let Some(bounds) = run.bound_one(&lo, &hi)? else {
            return Ok(outcome(
                Verdict::Unknown("the case's box could not be bounded".into()),
                boxes,
                0.0,
            ));
        };
        boxes += 1;
        open_cases.push(CaseState {
            search: Search::new(engine, case, ci),
            run,
            stack: vec![SubBox {
                lo,
                hi,
                frac: 1.0,
                bounds,
            }],
            stuck: 0.0,
        });
    }
    let proven = |states: &[CaseState<'_>]| -> f64 {
        let done: f64 = states
            .iter()
            .map(|st| {
                let open: f64 = st.stack.iter().map(|b| b.frac).sum();
                (1.0 - open - st.stuck).max(0.0)
            })
            .sum();
        done / cases
    };
    // Fresh searches of the open cases after 4096, 8192, 16384, ... boxes (new random starts
    // each time; counted in boxes, not seconds, so a run stays reproducible): one search can
    // miss a small unsafe region that the next finds (1_9 property 7 with seed 7); from 2^16
    // boxes on, with the population search too (5_3 property 2).
    let mut next_attack = 4096u64;
    loop {
        if boxes >= next_attack {
            for st in open_cases.iter().filter(|st| !st.stack.is_empty()) {
                let deep = boxes >= WANDER_FROM;
                let ci = st.search.case_index;
                let t0 = Instant::now();
                let found = attack(engine, st.run.case, ci, deep, &mut rng)?;
                clock.searching.set(clock.searching.get() + t0.elapsed());
                if let Some(w) = found {
                    let p = proven(&open_cases);
                    return Ok(outcome(Verdict::Violated(w), boxes, p));
                }
            }
            next_attack = boxes.saturating_mul(2);
        }
        let mut active = false;
        for k in 0..open_cases.len() {
            let Some(st) = open_cases.get_mut(k) else {
                break;
            };
            if st.stack.is_empty() {
                continue;
            }
            active = true;
            if start.elapsed() >= opts.timeout {
                let p = proven(&open_cases);
                return Ok(outcome(
                    Verdict::Unknown("time limit reached".into()),
                    boxes,
                    p,
                ));
            }
            let take = st.stack.len().min(per_round.max(1));
            let round: Vec<SubBox> = st.stack.split_off(st.stack.len() - take);
            let step = step_round(
                &st.run,
                &st.search,
                round,
                &mut st.stack,
                &mut st.stuck,
                &mut boxes,
                &clock,
            )?;
            if let Round::Found(w) = step {
                let p = proven(&open_cases);
                return Ok(outcome(Verdict::Violated(w), boxes, p));
            }
            let progress = Progress {
                boxes,
                proven: proven(&open_cases),
                elapsed: start.elapsed(),
            };
            if let Some(cb) = opts.progress {
                if !cb(&progress) {
                    return Err(crate::error::VramError::new(
                        crate::error::ErrorKind::Cancelled,
                        "certify: cancelled by the progress callback",
                    ));
                }
            }
        }
        if !active {
            break;
        }
    }
    let share = proven(&open_cases);
    if open_cases.iter().any(|st| st.stuck > 0.0) {
        return Ok(outcome(
            Verdict::Unknown(
                "a sub-box one double wide could be neither proven nor refuted".into(),
            ),
            boxes,
            share,
        ));
    }
    Ok(outcome(Verdict::Holds, boxes, share))
}

/// What a half keeps of its parent's bounds, which hold over the half too: each row's
/// linear bound where it is the better one over the half (CROWN's adaptive slopes can make a
/// half's own bound worse than its parent's: on ACAS Xu 3_3 property 2 the search then split
/// inputs already 2^-10 wide while the one an eighth wide, which the bound needed, stayed),
/// and the tighter output bounds.
fn inherit(parent: &RowBounds, lo: &[f64], hi: &[f64], child: &mut RowBounds) {
    let n = lo.len().min(hi.len());
    for (k, low) in child.lower.iter_mut().enumerate() {
        let (Some(a), Some(&o)) = (
            parent.input_coeffs.get(k * n..(k + 1) * n),
            parent.offsets.get(k),
        ) else {
            continue;
        };
        if !o.is_finite() || a.iter().any(|v| !v.is_finite()) {
            continue;
        }
        let mut acc = crate::ibp::round::SoundAcc::default();
        acc.constant(o);
        for ((w, l), h) in a.iter().zip(lo).zip(hi) {
            acc.term(*w, *l, *h);
        }
        let v = acc.finish64().0;
        if v > *low {
            *low = v;
            if let (Some(c), Some(co)) = (
                child.input_coeffs.get_mut(k * n..(k + 1) * n),
                child.offsets.get_mut(k),
            ) {
                c.copy_from_slice(a);
                *co = o;
            }
        }
    }
    for (c, p) in child.out_lo.iter_mut().zip(&parent.out_lo) {
        *c = c.max(*p);
    }
    for (c, p) in child.out_hi.iter_mut().zip(&parent.out_hi) {
        *c = c.min(*p);
    }
}

/// The split of `parent` to keep, of its candidates with their halves' bounds: the one whose
/// worse half comes closest to proven (the first on ties), unless that gains less than
/// [`STALL`] of the parent's margin and a split along the widest input was tried. Each half
/// first takes what it can of the parent's bounds ([`inherit`]).
fn choose(run: &CaseRun<'_>, parent: &SubBox, group: Vec<Tried>) -> Option<(SubBox, SubBox)> {
    let mut best: Option<(f64, usize)> = None;
    let mut widest = None;
    let mut tried = Vec::with_capacity(group.len());
    for (i, (split, mut ra, mut rb)) in group.into_iter().enumerate() {
        inherit(&parent.bounds, &split.lower.0, &split.lower.1, &mut ra);
        inherit(&parent.bounds, &split.upper.0, &split.upper.1, &mut rb);
        let score = run.margin(&ra).min(run.margin(&rb));
        if split.widest {
            widest = Some(i);
        }
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, i));
        }
        tried.push((split, ra, rb));
    }
    // A split that barely moves the bound is a trap: on ACAS Xu 3_3 property 2, splits of
    // inputs already 2^-10 wide gained 10^-5 of a -0.013 margin, round after round, while the
    // input an eighth wide, whose halves gained nothing at first, stayed whole. Then the
    // widest input is split.
    let m = run.margin(&parent.bounds);
    let stalled = |s: f64| m.is_finite() && s - m < STALL * m.abs();
    let pick = match (best, widest) {
        (Some((s, _)), Some(w)) if stalled(s) => w,
        (Some((_, b)), _) => b,
        (None, _) => return None,
    };
    let (split, ra, rb) = tried.into_iter().nth(pick)?;
    let half = parent.frac / 2.0;
    let sub = |(lo, hi): (Vec<f64>, Vec<f64>), bounds: RowBounds| SubBox {
        lo,
        hi,
        frac: half,
        bounds,
    };
    Some((sub(split.lower, ra), sub(split.upper, rb)))
}

/// One round: drops the proven boxes, searches the others for counterexamples, bisects them
/// (bounding every candidate split at once) and pushes the chosen halves.
fn step_round(
    run: &CaseRun<'_>,
    search: &Search<'_>,
    round: Vec<SubBox>,
    stack: &mut Vec<SubBox>,
    case_stuck: &mut f64,
    boxes: &mut u64,
    clock: &Clock,
) -> Result<Round> {
    let threads = run.engine.host_threads();
    let open: Vec<SubBox> = crate::parallel::map_owned(round, threads, |b| {
        if run.margin(&b.bounds) <= 0.0 {
            run.cut(b)
        } else {
            None
        }
    })
    .into_iter()
    .flatten()
    .collect();
    if open.is_empty() {
        return Ok(Round::Continue);
    }
    // The gradient steps start from the boxes furthest from proven, at most DESCENT_STARTS.
    let mut order: Vec<usize> = (0..open.len()).collect();
    if open.len() > DESCENT_STARTS {
        let m: Vec<f64> = open.iter().map(|b| run.margin(&b.bounds)).collect();
        order.sort_by(|&a, &d| {
            let at = |k: usize| m.get(k).copied().unwrap_or(f64::INFINITY);
            at(a).total_cmp(&at(d))
        });
        order.truncate(DESCENT_STARTS);
        order.sort_unstable();
    }
    let starts: Vec<Start> = order
        .iter()
        .filter_map(|&k| open.get(k))
        .map(|b| Start {
            x: b.lo
                .iter()
                .zip(&b.hi)
                .map(|(l, h)| 0.5 * l + 0.5 * h)
                .collect(),
            lo: b.lo.clone(),
            hi: b.hi.clone(),
        })
        .collect();
    // On an engine that bounds on a device, the gradient steps run while the bounding call
    // waits for it; elsewhere first, and a witness ends the round before any bounding.
    let deferred = if run.engine.overlaps_search() {
        Some(starts)
    } else {
        let t0 = Instant::now();
        let found = search.descend(starts, 4, 0.7)?;
        clock.searching.set(clock.searching.get() + t0.elapsed());
        if let Some(w) = found {
            return Ok(Round::Found(w));
        }
        None
    };
    // Every candidate split of every open box.
    let mut splits: Vec<Split> = Vec::new();
    for (k, b) in open.iter().enumerate() {
        let cands = run.candidates(b);
        if cands.is_empty() {
            *case_stuck += b.frac;
        }
        let widest = run.widest(b);
        for j in cands {
            let mid = 0.5 * b.lo[j] + 0.5 * b.hi[j];
            let (mut lo2, mut hi1) = (b.lo.clone(), b.hi.clone());
            lo2[j] = mid;
            hi1[j] = mid;
            splits.push(Split {
                parent: k,
                widest: widest == Some(j),
                lower: (b.lo.clone(), hi1),
                upper: (lo2, b.hi.clone()),
            });
        }
    }
    let outers: Vec<(&Arc<Vec<crate::ibp::cpu::Boxes>>, Option<u32>)> = open
        .iter()
        .map(|b| (&b.bounds.nodes, b.bounds.slot.as_ref().map(|s| s.id)))
        .collect();
    let jobs: Vec<Job<'_>> = splits
        .iter()
        .flat_map(|s| {
            let (outer, outer_slot) = match outers.get(s.parent) {
                Some(&(n, slot)) => (Some(n), slot),
                None => (None, None),
            };
            [
                Job {
                    lo: &s.lower.0,
                    hi: &s.lower.1,
                    outer,
                    outer_slot,
                },
                Job {
                    lo: &s.upper.0,
                    hi: &s.upper.1,
                    outer,
                    outer_slot,
                },
            ]
        })
        .collect();
    let bound = || {
        let t0 = Instant::now();
        // A half its own bound proves is not bounded again from scratch: that could only
        // prove it more, and a proven half is dropped next round whatever its bound (a split
        // whose halves are both proven is chosen over any other, whichever such split it is).
        let b = run
            .engine
            .bound(&jobs, &run.rows, run.which.len(), &|l, lo, hi| {
                run.proven(l, lo, hi)
            });
        (b, t0.elapsed())
    };
    let (bounded, bound_time) = match deferred {
        Some(st) => {
            let (found, searched, bounded) = std::thread::scope(|scope| {
                let descent = scope.spawn(|| {
                    let t0 = Instant::now();
                    (search.descend(st, 4, 0.7), t0.elapsed())
                });
                let bounded = bound();
                // A panic in the descent goes on unwinding here (the C boundary catches it).
                let (found, searched) = descent
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p));
                (found, searched, bounded)
            });
            clock.searching.set(clock.searching.get() + searched);
            if let Some(w) = found? {
                return Ok(Round::Found(w));
            }
            bounded
        }
        None => bound(),
    };
    clock.bounding.set(clock.bounding.get() + bound_time);
    let mut bounds = bounded?.into_iter();
    *boxes += jobs.len() as u64;
    drop(jobs);
    // Each open box's candidate splits with their halves' bounds (a short result leaves the
    // remaining splits out).
    let mut groups: Vec<(usize, Vec<Tried>)> = (0..open.len()).map(|k| (k, Vec::new())).collect();
    for split in splits {
        let (Some(ra), Some(rb)) = (bounds.next(), bounds.next()) else {
            break;
        };
        if let Some((_, g)) = groups.get_mut(split.parent) {
            g.push((split, ra, rb));
        }
    }
    let chosen = crate::parallel::map_owned(groups, threads, |(k, group)| {
        open.get(k).and_then(|p| choose(run, p, group))
    });
    for (a, b) in chosen.into_iter().flatten() {
        stack.push(a);
        stack.push(b);
    }
    Ok(Round::Continue)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(lower: f64, coeffs: [f64; 2], offset: f64, out: (f64, f64)) -> RowBounds {
        RowBounds {
            lower: vec![lower],
            input_coeffs: coeffs.to_vec(),
            offsets: vec![offset],
            out_lo: vec![out.0],
            out_hi: vec![out.1],
            nodes: Arc::new(Vec::new()),
            slot: None,
        }
    }

    #[test]
    fn a_half_keeps_its_parents_bound_where_that_is_better() {
        // Parent: y ≥ x0 − x1 + 0.5 over [0,1]², so over the half [0.5,1]×[0,1] at least 0.
        let parent = bounds(-0.5, [1.0, -1.0], 0.5, (-2.0, 2.0));
        let mut worse = bounds(-0.25, [0.0, 3.0], -0.25, (-3.0, 1.0));
        inherit(&parent, &[0.5, 0.0], &[1.0, 1.0], &mut worse);
        assert!(
            worse.lower[0] <= 0.0 && worse.lower[0] > -1e-12,
            "{:?}",
            worse.lower
        );
        assert_eq!(
            (worse.input_coeffs.clone(), worse.offsets.clone()),
            (vec![1.0, -1.0], vec![0.5])
        );
        assert_eq!((worse.out_lo[0], worse.out_hi[0]), (-2.0, 1.0));
        // A half whose own bound is better keeps it, coefficients and all.
        let mut better = bounds(0.25, [0.0, 0.0], 0.25, (0.0, 1.0));
        inherit(&parent, &[0.5, 0.0], &[1.0, 1.0], &mut better);
        assert_eq!(better.lower, vec![0.25]);
        assert_eq!(
            (better.input_coeffs, better.offsets),
            (vec![0.0, 0.0], vec![0.25])
        );
        // A parent without a usable constant gives nothing.
        let blind = bounds(5.0, [1.0, 1.0], f64::NEG_INFINITY, (-9.0, 9.0));
        let mut b = bounds(-0.25, [0.0, 3.0], -0.25, (-3.0, 1.0));
        inherit(&blind, &[0.5, 0.0], &[1.0, 1.0], &mut b);
        assert_eq!(b.lower, vec![-0.25]);
    }
}
