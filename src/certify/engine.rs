//! Where a search's arithmetic runs: the CPU over a host-backed model's weights, or the GPU
//! over a CUDA-backed model's weights where they live (never copied to the host). The branch
//! and bound and the counterexample search are one algorithm over either: they ask for many
//! boxes' linear bounds, or many points' outputs and gradients, at once.

use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{Result, VramError};
use crate::ibp::Model;
use crate::ibp::chain::LinearBatch;
use crate::ibp::cpu::{Boxes, Network};
use crate::ibp::crown::{Crown, Relaxation, RowBounds};
use crate::ibp::gpu_entry::{self, NO_SLOT, NodeStore, Slot, StoreUse};

/// One box to bound: inside a box already bounded (`outer`: its node bounds, which the CPU
/// reuses; the GPU recomputes them).
pub struct Job<'a> {
    pub lo: &'a [f64],
    pub hi: &'a [f64],
    pub outer: Option<&'a Arc<Vec<Boxes>>>,
    /// The same on the GPU: the outer box's slot of the engine's node store.
    pub outer_slot: Option<u32>,
}

/// Outputs at one point, and the gradient of one row of the outputs there.
pub struct Probe {
    pub y: Vec<f64>,
    /// With respect to the input, up to a positive factor per input (the search only reads
    /// its signs).
    pub grad: Vec<f64>,
}

/// Whether a box's bound already settles it (the search: it proves the property there), from
/// the bound's rows' lower bounds and the output bounds (`lower`, `out_lo`, `out_hi`, as in
/// [`RowBounds`]). A box that starts from its parent's node bounds is bounded from scratch
/// too ([`either_way`]) unless this holds of the first bound: the second could only settle it
/// more.
pub type Settled<'a> = &'a (dyn Fn(&[f64], &[f64], &[f64]) -> bool + Sync);

pub trait Engine: Sync {
    /// Linear lower bounds of `rows` (`n_rows × output size`) times the output over each box.
    fn bound(
        &self,
        jobs: &[Job<'_>],
        rows: &[f64],
        n_rows: usize,
        settled: Settled<'_>,
    ) -> Result<Vec<RowBounds>>;

    /// Outputs at each point (`points`: `k × input size`), approximately (f64), and the
    /// gradient of row `pick(y)` of `rows` (`n × output size`) at it.
    fn probe(
        &self,
        points: &[f64],
        rows: &[f64],
        pick: &(dyn Fn(&[f64]) -> usize + Sync),
    ) -> Result<Vec<Probe>>;

    /// Sound bounds of the outputs at one point (a few ulps wide).
    fn enclose(&self, x: &[f64]) -> Result<(Vec<f64>, Vec<f64>)>;

    /// Boxes worth taking per round of the branch and bound.
    fn parents_per_round(&self) -> usize;

    /// Threads the search's own per-box work may use (cuts, choosing splits).
    fn host_threads(&self) -> usize;

    /// Whether the counterexample search may run on another thread while a [`Engine::bound`]
    /// call is in flight: worth it where the bounds are computed on a device and the calling
    /// thread only waits (on the CPU both would share the same cores).
    fn overlaps_search(&self) -> bool {
        false
    }

    fn input_size(&self) -> usize;
    fn output_size(&self) -> usize;
}

/// Runs `f` over `items` on up to `threads` threads; results in order.
fn map_parallel<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let slots: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    crate::parallel::for_each(items.iter().zip(&slots), threads, |(it, slot)| {
        let r = f(it)?;
        *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
        Ok::<(), VramError>(())
    })?;
    slots
        .into_iter()
        .map(|s| {
            s.into_inner()
                .unwrap_or_else(PoisonError::into_inner)
                .ok_or_else(|| VramError::invalid("certify", "a parallel result is missing"))
        })
        .collect()
}

/// A box bounded twice: `kept` starting from its parent's node bounds, `fresh` from scratch.
/// Both are sound. The parent's bounds usually help (they are tighter), but CROWN's adaptive
/// slope choice is not monotone in them, and on some ACAS Xu instances only the fresh bounds
/// prove the property: each row keeps the better lower bound, each output the tighter
/// interval, the split heuristic the coefficients of the better bound; the node bounds passed
/// on stay the parent-based ones (the tighter).
fn either_way(kept: &mut RowBounds, fresh: Fresh<'_>) {
    let best = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if best(fresh.lower) > best(&kept.lower) {
        // The coefficients and constants are one linear bound: they go together.
        kept.input_coeffs.clear();
        kept.input_coeffs.extend_from_slice(fresh.input_coeffs);
        kept.offsets.clear();
        kept.offsets.extend_from_slice(fresh.offsets);
    }
    for (a, b) in kept.lower.iter_mut().zip(fresh.lower) {
        *a = a.max(*b);
    }
    for (a, b) in kept.out_lo.iter_mut().zip(fresh.out_lo) {
        *a = a.max(*b);
    }
    for (a, b) in kept.out_hi.iter_mut().zip(fresh.out_hi) {
        *a = a.min(*b);
    }
}

/// The parts of a from-scratch bound that [`either_way`] reads, borrowed (on the GPU, from
/// the launch's result: no copy per box).
struct Fresh<'a> {
    lower: &'a [f64],
    input_coeffs: &'a [f64],
    offsets: &'a [f64],
    out_lo: &'a [f64],
    out_hi: &'a [f64],
}

impl<'a> From<&'a RowBounds> for Fresh<'a> {
    fn from(r: &'a RowBounds) -> Self {
        Self {
            lower: &r.lower,
            input_coeffs: &r.input_coeffs,
            offsets: &r.offsets,
            out_lo: &r.out_lo,
            out_hi: &r.out_hi,
        }
    }
}

/// `len` values of a GPU result from `at`, borrowed (a short result is an error, never a
/// panic).
fn slice(v: &[f64], at: usize, len: usize) -> Result<&[f64]> {
    v.get(at..at + len)
        .ok_or_else(|| VramError::invalid("linear bounds", "short result"))
}

/// `len` values of a GPU result from `at` (a short result is an error, never a panic).
fn part(v: &[f64], at: usize, len: usize) -> Result<Vec<f64>> {
    slice(v, at, len).map(<[f64]>::to_vec)
}

/// The CPU: CROWN-style bounds one box per thread, concrete f64 evaluation and gradients.
pub struct Cpu<'a> {
    pub net: &'a Network<'a>,
    pub crown: Crown<'a>,
    pub threads: usize,
}

impl<'a> Cpu<'a> {
    pub fn new(net: &'a Network<'a>, threads: usize) -> Self {
        Self {
            net,
            crown: Crown::new(
                Network {
                    nodes: net.nodes,
                    params: net.params.clone(),
                },
                Relaxation::Intersected,
            ),
            threads: threads.max(1),
        }
    }
}

impl Engine for Cpu<'_> {
    fn bound(
        &self,
        jobs: &[Job<'_>],
        rows: &[f64],
        n_rows: usize,
        settled: Settled<'_>,
    ) -> Result<Vec<RowBounds>> {
        map_parallel(jobs, self.threads, |j| {
            let Some(outer) = j.outer.filter(|o| !o.is_empty()) else {
                return self.crown.bound(j.lo, j.hi, rows, n_rows);
            };
            let mut kept = self
                .crown
                .bound_within(j.lo, j.hi, rows, n_rows, Some(outer))?;
            if settled(&kept.lower, &kept.out_lo, &kept.out_hi) {
                return Ok(kept);
            }
            let fresh = self.crown.bound(j.lo, j.hi, rows, n_rows)?;
            either_way(&mut kept, Fresh::from(&fresh));
            Ok(kept)
        })
    }

    fn probe(
        &self,
        points: &[f64],
        rows: &[f64],
        pick: &(dyn Fn(&[f64]) -> usize + Sync),
    ) -> Result<Vec<Probe>> {
        let (n_in, n_out) = (self.input_size(), self.output_size());
        let pts: Vec<&[f64]> = points.chunks(n_in.max(1)).collect();
        // Few points do not pay for threads.
        let threads = self.threads.min(pts.len().div_ceil(16)).max(1);
        map_parallel(&pts, threads, |x| {
            let t = self.net.evaluate(x);
            let y = t.output().to_vec();
            let i = pick(&y);
            let grad = match rows.get(i * n_out..(i + 1) * n_out) {
                Some(dy) => self.net.gradient(&t, dy),
                None => vec![0.0; n_in],
            };
            Ok(Probe { y, grad })
        })
    }

    fn enclose(&self, x: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
        let b = self.crown.bound(x, x, &[], 0)?;
        Ok((b.out_lo, b.out_hi))
    }

    fn parents_per_round(&self) -> usize {
        32 * self.threads
    }

    fn host_threads(&self) -> usize {
        self.threads
    }

    fn input_size(&self) -> usize {
        self.net.nodes.first().map_or(0, |n| n.size() as usize)
    }

    fn output_size(&self) -> usize {
        self.crown.output_size()
    }
}

/// The model's GPU (cuda/crown.cu): every box of a round in one launch, one block per box;
/// points are boxes of width zero, whose linear bound's coefficients are the gradient. Every
/// bounded box's node bounds stay in GPU memory (a slot of `store`) for its sub-boxes.
pub struct Gpu<'a> {
    model: &'a Model,
    store: Arc<NodeStore>,
    /// For the host's share of the work between launches (unpacking results).
    threads: usize,
}

impl<'a> Gpu<'a> {
    pub fn new(model: &'a Model, threads: usize) -> Result<Self> {
        Ok(Self {
            model,
            store: Arc::new(NodeStore::new(model)?),
            threads: threads.max(1),
        })
    }

    fn unit_row(&self) -> Vec<f64> {
        let mut r = vec![0.0; self.output_size()];
        if let Some(v) = r.first_mut() {
            *v = 1.0;
        }
        r
    }
}

impl Engine for Gpu<'_> {
    fn bound(
        &self,
        jobs: &[Job<'_>],
        rows: &[f64],
        n_rows: usize,
        settled: Settled<'_>,
    ) -> Result<Vec<RowBounds>> {
        let n_in = self.input_size();
        let n_out = self.output_size();
        // The kernel takes at least one row: a case without exact rows is decided on the
        // output bounds alone.
        let unit = self.unit_row();
        let (rows_k, n_k) = if n_rows == 0 {
            (&unit[..], 1)
        } else {
            (rows, n_rows)
        };
        let mut lo = Vec::with_capacity(jobs.len() * n_in);
        let mut hi = Vec::with_capacity(jobs.len() * n_in);
        for j in jobs {
            lo.extend_from_slice(j.lo);
            hi.extend_from_slice(j.hi);
        }
        let slots: Vec<Option<Slot>> = jobs.iter().map(|_| Slot::take(&self.store)).collect();
        let own: Vec<u32> = slots
            .iter()
            .map(|s| s.as_ref().map_or(NO_SLOT, |s| s.id))
            .collect();
        let outer: Vec<u32> = jobs
            .iter()
            .map(|j| j.outer_slot.unwrap_or(NO_SLOT))
            .collect();
        let store = StoreUse {
            store: &self.store,
            outer: &outer,
            own: &own,
        };
        let run = |lo: &[f64], hi: &[f64], store| {
            gpu_entry::linear_bounds(
                self.model,
                lo,
                hi,
                rows_k,
                n_k,
                true,
                store,
                Relaxation::Intersected,
                None,
            )
        };
        let b = run(&lo, &hi, Some(store))?;
        // The boxes that need a from-scratch bound too: those that started from a parent's
        // bounds and that their own do not settle, read from the launch's arrays (before any
        // unpacking, so that the second launch follows the first at once).
        let mut redo: Vec<usize> = Vec::new();
        for k in 0..jobs.len() {
            // (A box bounded from scratch already has its from-scratch bound.)
            if outer.get(k).is_none_or(|&o| o == NO_SLOT) {
                continue;
            }
            let done = settled(
                slice(&b.lower, k * n_k, n_rows)?,
                slice(&b.out_lo, k * n_out, n_out)?,
                slice(&b.out_hi, k * n_out, n_out)?,
            );
            if !done {
                redo.push(k);
            }
        }
        let fresh = if redo.is_empty() {
            None
        } else {
            let gather = |v: &[f64]| -> Result<Vec<f64>> {
                let mut out = Vec::with_capacity(redo.len() * n_in);
                for &k in &redo {
                    out.extend_from_slice(slice(v, k * n_in, n_in)?);
                }
                Ok(out)
            };
            Some(run(&gather(&lo)?, &gather(&hi)?, None)?)
        };
        // Where each box's from-scratch bound is in the second launch's result.
        let mut at: Vec<Option<usize>> = vec![None; jobs.len()];
        for (i, &k) in redo.iter().enumerate() {
            if let Some(a) = at.get_mut(k) {
                *a = Some(i);
            }
        }
        let of = |b: &LinearBatch, k: usize| -> Result<RowBounds> {
            Ok(RowBounds {
                lower: part(&b.lower, k * n_k, n_rows)?,
                input_coeffs: part(&b.coeffs, k * n_k * n_in, n_rows * n_in)?,
                offsets: part(&b.offsets, k * n_k, n_rows)?,
                out_lo: part(&b.out_lo, k * n_out, n_out)?,
                out_hi: part(&b.out_hi, k * n_out, n_out)?,
                // Its own (empty) list: one shared by every box of the call would be one
                // reference count that the threads unpacking and dropping boxes all write.
                nodes: Arc::default(),
                slot: None,
            })
        };
        // (box, (its node-store slot, where its from-scratch bound is)).
        let items: Vec<_> = slots.into_iter().zip(at).enumerate().collect();
        crate::parallel::map_owned(items, self.threads, |(k, (slot, i))| {
            let mut r = of(&b, k)?;
            if let (Some(f), Some(i)) = (&fresh, i) {
                either_way(
                    &mut r,
                    Fresh {
                        lower: slice(&f.lower, i * n_k, n_rows)?,
                        input_coeffs: slice(&f.coeffs, i * n_k * n_in, n_rows * n_in)?,
                        offsets: slice(&f.offsets, i * n_k, n_rows)?,
                        out_lo: slice(&f.out_lo, i * n_out, n_out)?,
                        out_hi: slice(&f.out_hi, i * n_out, n_out)?,
                    },
                );
            }
            r.slot = slot.map(Arc::new);
            Ok(r)
        })
        .into_iter()
        .collect()
    }

    fn probe(
        &self,
        points: &[f64],
        rows: &[f64],
        pick: &(dyn Fn(&[f64]) -> usize + Sync),
    ) -> Result<Vec<Probe>> {
        let (n_in, n_out) = (self.input_size(), self.output_size());
        let unit = self.unit_row();
        let n_rows = rows.len() / n_out.max(1);
        let (rows_k, n_k) = if n_rows == 0 {
            (&unit[..], 1)
        } else {
            (rows, n_rows)
        };
        let b = gpu_entry::linear_bounds(
            self.model,
            points,
            points,
            rows_k,
            n_k,
            true,
            None,
            Relaxation::Intersected,
            None,
        )?;
        let k = points.len() / n_in.max(1);
        (0..k)
            .map(|p| {
                let lo = part(&b.out_lo, p * n_out, n_out)?;
                let hi = part(&b.out_hi, p * n_out, n_out)?;
                let y: Vec<f64> = lo.iter().zip(&hi).map(|(l, h)| 0.5 * l + 0.5 * h).collect();
                let i = pick(&y).min(n_k - 1);
                let grad = part(&b.coeffs, (p * n_k + i) * n_in, n_in)?;
                Ok(Probe { y, grad })
            })
            .collect()
    }

    fn enclose(&self, x: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
        let b = gpu_entry::linear_bounds(
            self.model,
            x,
            x,
            &self.unit_row(),
            1,
            false,
            None,
            Relaxation::Intersected,
            None,
        )?;
        Ok((b.out_lo, b.out_hi))
    }

    fn parents_per_round(&self) -> usize {
        2048
    }

    fn host_threads(&self) -> usize {
        self.threads
    }

    fn overlaps_search(&self) -> bool {
        true
    }

    fn input_size(&self) -> usize {
        self.model.input_size()
    }

    fn output_size(&self) -> usize {
        self.model.output_size()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use super::*;
    use crate::backend::BackendChoice;
    use crate::context::{Context, ContextOptions};

    fn acasxu() -> Option<PathBuf> {
        let dir = crate::certify::acasxu_dir();
        dir.join("onnx").is_dir().then_some(dir)
    }

    fn context(backend: BackendChoice) -> Option<Arc<Context>> {
        Context::new(&ContextOptions {
            secret: &[7u8; 32],
            backend,
            device: 0,
            capacity_bytes: 0,
            allow_fault_drills: false,
            max_threads: 2,
        })
        .ok()
        .map(Arc::new)
    }

    /// xorshift, values in [0, 1).
    fn uniform(s: &mut u64) -> f64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        (*s >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Every row's linear bound `row·y ≥ coeffs·x + offset` is checked at random points of
    /// random sub-boxes (inside `lo..hi`) against sound output bounds at the point: it must
    /// never exceed the row's largest possible value there. Returns how many constants were
    /// finite.
    fn offsets_hold(engine: &dyn Engine, lo: &[f64], hi: &[f64]) -> usize {
        let (n_in, n_out) = (engine.input_size(), engine.output_size());
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut rows = vec![0.0; 2 * n_out];
        rows[0] = 1.0;
        rows[1] = -1.0;
        rows[n_out + 2] = -2.0;
        rows[n_out + 3] = 0.5;
        let mut finite = 0;
        for _ in 0..40 {
            let (mut l, mut h) = (vec![0.0; n_in], vec![0.0; n_in]);
            for j in 0..n_in {
                let w = (hi[j] - lo[j]) * uniform(&mut s) * 0.3;
                l[j] = lo[j] + (hi[j] - lo[j] - w) * uniform(&mut s);
                h[j] = l[j] + w;
            }
            let job = Job {
                lo: &l,
                hi: &h,
                outer: None,
                outer_slot: None,
            };
            let b = engine
                .bound(&[job], &rows, 2, &|_, _, _| false)
                .unwrap()
                .remove(0);
            assert_eq!(b.offsets.len(), 2);
            for _ in 0..8 {
                let x: Vec<f64> = (0..n_in)
                    .map(|j| l[j] + (h[j] - l[j]) * uniform(&mut s))
                    .collect();
                let (ylo, yhi) = engine.enclose(&x).unwrap();
                for r in 0..2 {
                    let k = b.offsets[r];
                    if k == f64::NEG_INFINITY {
                        continue;
                    }
                    finite += 1;
                    let row = &rows[r * n_out..(r + 1) * n_out];
                    let most: f64 = (0..n_out)
                        .map(|j| (row[j] * ylo[j]).max(row[j] * yhi[j]))
                        .sum();
                    let c = &b.input_coeffs[r * n_in..(r + 1) * n_in];
                    let at: f64 = c.iter().zip(&x).map(|(a, v)| a * v).sum::<f64>() + k;
                    let slack = 1e-12 * (1.0 + at.abs() + most.abs());
                    assert!(
                        at <= most + slack,
                        "row {r}: bound {at} above {most} at {x:?}"
                    );
                }
            }
        }
        finite
    }

    /// On ACAS Xu (ONNX: normalised inputs; NNet: physical inputs, normalised and clipped by
    /// the network), on the CPU and, where there is one, on the GPU.
    #[test]
    fn linear_bounds_constants_hold_at_every_point() {
        let Some(dir) = acasxu() else {
            println!("SKIPPED linear_bounds_constants_hold_at_every_point: no ACAS Xu data");
            return;
        };
        let onnx = dir.join("onnx/ACASXU_experimental_v2a_1_1.onnx");
        let nnet = dir.join("nnet/ACASXU_experimental_v2a_1_1.nnet");
        let norm_box = ([-0.3, -0.5, -0.5, -0.5, -0.5], [0.68, 0.5, 0.5, 0.5, 0.5]);
        let phys_box = (
            [-1000.0, -3.2, -3.2, 100.0, 0.0],
            [60760.0, 3.1, 3.1, 1200.0, 1200.0],
        );
        let host = context(BackendChoice::Host).expect("a host context");
        for (path, (lo, hi)) in [(&onnx, norm_box), (&nnet, phys_box)] {
            let model = if path.extension().is_some_and(|e| e == "onnx") {
                crate::ibp::onnx::load(Arc::clone(&host), path, None).unwrap()
            } else {
                crate::ibp::nnet::load(Arc::clone(&host), path).unwrap()
            };
            let net = model.host_network().unwrap();
            let cpu = Cpu::new(&net, 2);
            assert!(offsets_hold(&cpu, &lo, &hi) > 300, "{}", path.display());
        }
        let Some(gpu_ctx) = context(BackendChoice::Cuda)
            .filter(|c| matches!(c.residency(), crate::seal::record::Residency::Cuda { .. }))
        else {
            println!("SKIPPED linear_bounds_constants_hold_at_every_point on the GPU: no GPU");
            return;
        };
        let model = crate::ibp::onnx::load(gpu_ctx, &onnx, None).unwrap();
        let gpu = Gpu::new(&model, 2).unwrap();
        assert!(offsets_hold(&gpu, &norm_box.0, &norm_box.1) > 300);
    }
}
