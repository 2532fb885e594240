//! A built network: immutable, its parameters sealed shards of one context, usable from many
//! threads at once.

use std::sync::{Arc, OnceLock};

use super::chain::Chain;

use super::cpu::Network;
use super::crown::{Crown, Linear, keep_larger};
use super::graph::{Node, Op};
use super::round::{down32, up32};
use super::spec::Spec;
use crate::context::{Context, Outcome, VerifyReport};
use crate::error::{ErrorKind, Result, VramError};
use crate::shard::Shard;

pub struct Model {
    /// The device plan of a CUDA-backed model, made when it is built (declared first: it holds
    /// the weights' device addresses, so it goes before the shards do).
    #[cfg(vram_cuda)]
    gpu: Option<super::gpu_plan::GpuPlan>,
    ctx: Arc<Context>,
    name: String,
    nodes: Vec<Node>,
    params: Vec<Arc<Shard>>,
    /// The dense-chain form, worked out on first use (the GPU linear bounds run from it).
    chain: OnceLock<Result<Chain>>,
}

/// Where the caller's boxes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memory {
    Host,
    Device,
}

/// One propagation request.
pub struct Request<'a> {
    pub batch: usize,
    pub in_lo: &'a [f32],
    pub in_hi: &'a [f32],
    pub spec: Option<&'a Spec>,
}

impl Model {
    pub(crate) fn new(
        ctx: Arc<Context>,
        name: String,
        nodes: Vec<Node>,
        params: Vec<Arc<Shard>>,
    ) -> Result<Self> {
        #[allow(unused_mut)]
        let mut model = Self {
            #[cfg(vram_cuda)]
            gpu: None,
            ctx,
            name,
            nodes,
            params,
            chain: OnceLock::new(),
        };
        #[cfg(vram_cuda)]
        if let crate::seal::record::Residency::Cuda { device } = model.ctx.residency() {
            model.gpu = Some(super::gpu_plan::GpuPlan::new(&model, device)?);
        }
        Ok(model)
    }

    /// The device plan (CUDA-backed models).
    #[cfg(vram_cuda)]
    pub(crate) fn gpu_plan(&self) -> Option<&super::gpu_plan::GpuPlan> {
        self.gpu.as_ref()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The model as a chain of dense layers, or `Unsupported` naming the node that is not.
    pub fn chain(&self) -> Result<&Chain> {
        self.chain
            .get_or_init(|| Chain::of(&self.nodes))
            .as_ref()
            .map_err(Clone::clone)
    }

    pub fn params(&self) -> &[Arc<Shard>] {
        &self.params
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    pub fn input_size(&self) -> usize {
        self.nodes.first().map_or(0, |n| n.size() as usize)
    }

    pub fn output_size(&self) -> usize {
        self.nodes.last().map_or(0, |n| n.size() as usize)
    }

    /// Checks a spec against the model's output size.
    pub fn check_spec(&self, spec: &Spec) -> Result<()> {
        if spec.rows == 0 {
            return Err(VramError::invalid(
                "spec rows",
                "must be > 0 when a spec is given",
            ));
        }
        if spec.c.len() != spec.rows * self.output_size() {
            return Err(VramError::invalid(
                "spec C",
                "must hold rows × output size values",
            ));
        }
        if let Some(i) = spec.c.iter().chain(&spec.d).position(|v| !v.is_finite()) {
            return Err(VramError::invalid(
                "spec C / d",
                format!("value {i} is not finite"),
            ));
        }
        Ok(())
    }

    /// Rejects NaN and lower > upper, naming the first offending element.
    pub fn check_boxes(lo: &[f32], hi: &[f32]) -> Result<()> {
        for (i, (&l, &u)) in lo.iter().zip(hi).enumerate() {
            if l.is_nan() || u.is_nan() {
                return Err(VramError::invalid(
                    "in_lower/in_upper",
                    format!("element {i} is NaN"),
                ));
            }
            if l > u {
                return Err(VramError::invalid(
                    "in_lower/in_upper",
                    format!("element {i}: lower {l} > upper {u}"),
                ));
            }
        }
        Ok(())
    }

    /// Refuses a batch whose host memory could never fit this machine, before any box is read:
    /// boxes in host memory (`host_boxes`: inputs and outputs, f32 lower and upper), and on
    /// the CPU path every node's bounds for the whole batch, held at once (two f64 per
    /// element). Device workspaces are allocated fallibly on the GPU instead.
    pub fn check_batch(&self, batch: usize, host_boxes: bool, out_per_item: usize) -> Result<()> {
        let batch = batch as u64;
        if host_boxes {
            let boxes = (self.input_size() as u64)
                .checked_add(out_per_item as u64)
                .and_then(|n| n.checked_mul(8))
                .and_then(|b| b.checked_mul(batch));
            crate::fallible::check_host_bytes(
                boxes.unwrap_or(u64::MAX),
                "batch (boxes in host memory)",
            )?;
        }
        if self.ctx.residency() != crate::seal::record::Residency::Host {
            return Ok(());
        }
        let bounds = self
            .nodes
            .iter()
            .try_fold(0u64, |acc, n| acc.checked_add(n.size()))
            .and_then(|n| n.checked_mul(16))
            .and_then(|b| b.checked_mul(batch));
        crate::fallible::check_host_bytes(bounds.unwrap_or(u64::MAX), "batch (CPU bounds)")
    }

    /// The network over the host view of its weights (host backend only: weights in GPU
    /// memory are never copied to the host).
    pub fn host_network(&self) -> Result<Network<'_>> {
        let params: Option<Vec<&[f32]>> =
            self.params.iter().map(|s| s.storage().host_f32()).collect();
        let Some(params) = params else {
            return Err(VramError::new(
                ErrorKind::Unsupported,
                "model: its weights live in GPU memory; the CPU path needs the host backend",
            ));
        };
        Ok(Network {
            nodes: &self.nodes,
            params,
        })
    }

    /// The rows whose lower bounds give linear bounds of the output (or of the spec's rows):
    /// `C` (the identity without a spec), then `−C` for the upper bounds; with the spec's
    /// offsets `d` (zeros without one) and the number of rows of `C`.
    pub(crate) fn signed_rows(&self, spec: Option<&Spec>) -> Result<(usize, Vec<f64>, Vec<f64>)> {
        let n_y = self.output_size();
        let (rows, c, d): (usize, Vec<f64>, Vec<f64>) = match spec {
            Some(s) => (
                s.rows,
                s.c.iter().map(|&v| f64::from(v)).collect(),
                s.d.iter().map(|&v| f64::from(v)).collect(),
            ),
            None => {
                let mut c = crate::fallible::try_vec(n_y * n_y, 0.0, "linear bounds")?;
                for j in 0..n_y {
                    c[j * n_y + j] = 1.0;
                }
                (n_y, c, vec![0.0; n_y])
            }
        };
        let mut lam = crate::fallible::try_with_capacity(2 * c.len(), "linear bounds")?;
        lam.extend(c.iter().copied());
        lam.extend(c.iter().map(|v| -v));
        Ok((rows, lam, d))
    }

    /// Narrows one item's f32 bounds `[ol, oh]` (`rows` values) by the lower bounds of its
    /// signed rows (`lower`: `2 × rows`, from [`Model::signed_rows`]) plus the offsets `d`.
    pub(crate) fn narrow(lower: &[f64], d: &[f64], ol: &mut [f32], oh: &mut [f32]) {
        let rows = ol.len();
        for r in 0..rows {
            let dr = d.get(r).copied().unwrap_or(0.0);
            let (Some(&l), Some(&u)) = (lower.get(r), lower.get(rows + r)) else {
                continue;
            };
            // One rounded addition each: one step outward covers it.
            let lo = down32(super::round::below(l + dr));
            let hi = up32(super::round::above(-u + dr));
            ol[r] = ol[r].max(lo);
            oh[r] = oh[r].min(hi);
        }
    }

    /// Linear (CROWN-style) bounds for host boxes on the CPU, intersected with IBP's: never
    /// wider than [`Model::propagate_host`] on any box (with [`Linear::Both`], nor than either
    /// relaxation's).
    pub fn linear_host(
        &self,
        req: &Request<'_>,
        out_lo: &mut [f32],
        out_hi: &mut [f32],
        method: Linear,
    ) -> Result<()> {
        self.propagate_host(req, out_lo, out_hi)?;
        let crowns = method
            .passes()
            .iter()
            .map(|&relax| Ok(Crown::new(self.host_network()?, relax)))
            .collect::<Result<Vec<_>>>()?;
        let n_in = self.input_size();
        let (rows, lam, d) = self.signed_rows(req.spec)?;
        let items = out_lo
            .chunks_mut(rows)
            .zip(out_hi.chunks_mut(rows))
            .zip(req.in_lo.chunks(n_in).zip(req.in_hi.chunks(n_in)));
        crate::parallel::for_each(
            items,
            self.ctx.backend().cpu_threads(),
            |((ol, oh), (l, h))| {
                let l: Vec<f64> = l.iter().map(|&v| f64::from(v)).collect();
                let h: Vec<f64> = h.iter().map(|&v| f64::from(v)).collect();
                let mut best: Vec<f64> = Vec::new();
                for crown in &crowns {
                    keep_larger(&mut best, crown.bound(&l, &h, &lam, 2 * rows)?.lower);
                }
                Self::narrow(&best, &d, ol, oh);
                Ok(())
            },
        )
    }

    /// Bounds for host boxes on the CPU (host backend).
    pub fn propagate_host(
        &self,
        req: &Request<'_>,
        out_lo: &mut [f32],
        out_hi: &mut [f32],
    ) -> Result<()> {
        let net = self.host_network()?;
        let (n_in, n_out) = (
            self.input_size(),
            req.spec.map_or(self.output_size(), |s| s.rows),
        );
        // At most the context's threads (max_threads), and none beyond the calling one for a
        // small batch: a thread costs more than a few boxes' arithmetic.
        const MIN_ITEMS_PER_THREAD: usize = 64;
        let threads = self
            .ctx
            .backend()
            .cpu_threads()
            .min(req.batch.div_ceil(MIN_ITEMS_PER_THREAD))
            .max(1);
        // Parts small enough that every node's bounds stay in cache (a whole batch's would be
        // fresh, page-faulting memory on every call); the workers take them from one queue.
        const MAX_ITEMS_PER_PART: usize = 64;
        let per = req.batch.div_ceil(threads).min(MAX_ITEMS_PER_PART);
        let chunks = req
            .in_lo
            .chunks(per * n_in)
            .zip(req.in_hi.chunks(per * n_in))
            .zip(
                out_lo
                    .chunks_mut(per * n_out)
                    .zip(out_hi.chunks_mut(per * n_out)),
            );
        crate::parallel::for_each(chunks, threads, |((lo, hi), (olo, ohi))| {
            net.run_chunk(lo.len() / n_in, lo, hi, req.spec, olo, ohi)
        })
    }

    /// Verifies every parameter shard in one batch; one report sums them up.
    pub fn verify(&self, ctx: &Context) -> Result<VerifyReport> {
        let shards: Vec<&Shard> = self.params.iter().map(|s| s.as_ref()).collect();
        let reports = ctx.verify_many(&shards, None)?;
        let mut total = VerifyReport {
            outcome: Outcome::Intact,
            leaf_size: reports.first().map_or(0, |r| r.leaf_size),
            total_leaves: 0,
            region_size: reports.first().map_or(0, |r| r.region_size),
            total_regions: 0,
            damaged_regions: 0,
            first_damaged_offset: u64::MAX,
        };
        for r in &reports {
            total.total_leaves += r.total_leaves;
            total.total_regions += r.total_regions;
            total.damaged_regions += r.damaged_regions;
            match (total.outcome, r.outcome) {
                (_, Outcome::BadSeal) => total.outcome = Outcome::BadSeal,
                (Outcome::Intact, Outcome::Damaged) => {
                    total.outcome = Outcome::Damaged;
                    total.first_damaged_offset = r.first_damaged_offset;
                }
                _ => {}
            }
        }
        Ok(total)
    }

    /// The sealed weight tensor of node `node` (linear and conv2d layers).
    pub fn weight_shard(&self, node: usize) -> Result<&Shard> {
        let weight = match self.nodes.get(node).map(|n| &n.op) {
            Some(Op::Linear { weight, .. } | Op::Conv2d { weight, .. }) => *weight,
            _ => {
                return Err(VramError::invalid(
                    "node",
                    format!("node {node} has no weight tensor"),
                ));
            }
        };
        self.params
            .get(weight)
            .map(|s| s.as_ref())
            .ok_or_else(|| VramError::invalid("node", "weight missing"))
    }
}
