#!/usr/bin/env python3
"""libvram's sound linear bounds (IBP_METHOD_LINEAR, on the GPU and on the CPU) against
auto_LiRPA 0.7.1's CROWN (float32 and float64, on the GPU; not sound under floating point) and
IBP, on the same ACAS Xu boxes, measured in one run: mean output width (tightness), how much
wider than float64 CROWN libvram's bounds are per box and output (relative excess: largest,
99.9th percentile, share above 1e-4), and time per batch (median of 20 after a warm-up; as a
median of 5, auto_LiRPA's CROWN moved between 39.9 and 60.3 ms from one run to the next). libvram
is timed twice on the GPU: boxes as CUDA tensors (as auto_LiRPA gets them) and as NumPy arrays;
method="linear_both" (the intersected relaxation and textbook CROWN, the better bound of each
output) and method="linear_guarded" (a second pass where the intersection changed a bound) with
CUDA tensors; the guarded bounds also on the CPU, against the GPU's. Last, the GPU methods and
auto_LiRPA's float32 CROWN timed in turn, call by call (head_to_head), auto_LiRPA both as
called by default (autograd on) and under torch.no_grad().

usage: linear_vs_autolirpa.py ACASXU_DIR [BATCH]   (auto_LiRPA importable; torch with CUDA)"""
import os
import sys
import time

import numpy as np
import torch

import nnet_file
import vram


def nnet_layers(path):
    return [(np.array(w, dtype=np.float32), np.array(b, dtype=np.float32)) for w, b in nnet_file.read(path)[2]]


def torch_model(layers, dtype):
    mods = []
    for k, (w, b) in enumerate(layers):
        lin = torch.nn.Linear(w.shape[1], w.shape[0]).to(dtype)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w.astype(np.float64)))
            lin.bias.copy_(torch.from_numpy(b.astype(np.float64)))
        mods.append(lin)
        if k + 1 < len(layers):
            mods.append(torch.nn.ReLU())
    return torch.nn.Sequential(*mods)


def timed(fn, reps=20):
    out, times = fn(), []  # the warm-up
    for _ in range(reps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return out, 1e3 * sorted(times)[len(times) // 2]


def main():
    from auto_LiRPA import BoundedModule, BoundedTensor
    from auto_LiRPA.perturbations import PerturbationLpNorm

    data, batch = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 16384
    name = "ACASXU_experimental_v2a_1_1"
    layers = nnet_layers(os.path.join(data, "nnet", name + ".nnet"))
    gen = np.random.default_rng(7)
    centre = gen.uniform(-0.4, 0.4, size=(batch, 5)).astype(np.float32)
    lo, hi = centre - np.float32(0.01), centre + np.float32(0.01)
    print(f"ACAS Xu {name}, {batch} boxes of half-width 0.01 (normalised inputs)")
    print(f"GPU: {torch.cuda.get_device_name(0)}; CPU: {os.cpu_count()} logical CPUs")

    def ours(backend):
        with vram.Context(os.urandom(32), backend=backend) as ctx:
            net = ctx.network_from_onnx(os.path.join(data, "onnx", name + ".onnx"))
            il, ih = net.propagate(lo, hi)
            reps = 20 if backend == "cuda" else 1
            net.propagate(lo[:64], hi[:64], method="linear")  # warm-up
            times = []
            for _ in range(reps):
                t = time.perf_counter()
                ll, lh = net.propagate(lo, hi, method="linear")
                times.append(1e3 * (time.perf_counter() - t))
            # The guarded relaxation (IBP_METHOD_LINEAR_GUARDED), boxes as NumPy arrays.
            ql, qh = net.propagate(lo, hi, method="linear_guarded")
            dev_ms, both, guarded = None, None, (ql, qh, None)
            if backend == "cuda":
                # Boxes as CUDA tensors, as auto_LiRPA takes them: nothing crosses to the host.
                dlo, dhi = torch.from_numpy(lo).cuda(), torch.from_numpy(hi).cuda()
                (dl, dh), dev_ms = timed(lambda: net.propagate(dlo, dhi, method="linear"))
                same = np.abs(dl.cpu().numpy().astype(np.float64) - ll) <= 1e-6 * (1 + np.abs(ll))
                assert same.all() and dl.is_cuda, "CUDA-tensor and NumPy boxes' bounds differ"
                (bl, bh), both_ms = timed(lambda: net.propagate(dlo, dhi, method="linear_both"))
                both = (bl.cpu().numpy(), bh.cpu().numpy(), both_ms)
                (ql, qh), guarded_ms = timed(lambda: net.propagate(dlo, dhi, method="linear_guarded"))
                guarded = (ql.cpu().numpy(), qh.cpu().numpy(), guarded_ms)
            return il, ih, ll, lh, sorted(times)[len(times) // 2], dev_ms, both, guarded

    il, ih, ll, lh, ours_ms, _, _, (cql, cqh, _) = ours("host")
    _, _, gl, gh, gpu_ms, gpu_dev_ms, (bl, bh, both_ms), (ql, qh, guarded_ms) = ours("cuda")

    res = {}
    for dtype in (torch.float32, torch.float64):
        model = torch_model(layers, dtype).cuda()
        x_l = torch.from_numpy(lo).to("cuda", dtype)
        x_u = torch.from_numpy(hi).to("cuda", dtype)
        bm = BoundedModule(model, torch.zeros(1, 5, dtype=dtype, device="cuda"), device="cuda")
        x = BoundedTensor((x_l + x_u) / 2, PerturbationLpNorm(norm=np.inf, x_L=x_l, x_U=x_u))
        for method in ("IBP", "CROWN"):
            (l, u), ms = timed(lambda: bm.compute_bounds(x=(x,), method=method))
            res[(method, dtype)] = (l.detach().double().cpu().numpy(), u.detach().double().cpu().numpy(), ms)

    c64l, c64u, _ = res[("CROWN", torch.float64)]
    # libvram's bounds come back as float32 rounded outward (ibp_propagate's output format), so
    # they are also compared with float64 CROWN rounded outward to float32: what is left is
    # the bound itself, not the format.
    r32l, r32u = outward32(c64l, c64u)

    def excess(l, u, ref=(c64l, c64u)):
        w_ref = ref[1].astype(np.float64) - ref[0].astype(np.float64)
        w = u.astype(np.float64) - l.astype(np.float64)
        e = (w - w_ref) / np.maximum(w_ref, 1e-300)
        return float(np.max(e)), float(np.quantile(e, 0.999)), float(np.mean(e > 1e-4))

    print("| bounds | mean width | time per batch |")
    print("|---|---|---|")
    print(f"| libvram IBP (sound) | {width(il, ih):.6g} | |")
    print(f"| libvram linear (sound, GPU, boxes as CUDA tensors) | {width(gl, gh):.6g} | {gpu_dev_ms:.2f} ms |")
    print(f"| libvram linear (sound, GPU, boxes as NumPy arrays) | {width(gl, gh):.6g} | {gpu_ms:.2f} ms |")
    print(f"| libvram linear_guarded (sound, GPU, boxes as CUDA tensors) | {width(ql, qh):.6g} | {guarded_ms:.2f} ms |")
    print(f"| libvram linear_both (sound, GPU, boxes as CUDA tensors) | {width(bl, bh):.6g} | {both_ms:.2f} ms |")
    print(f"| libvram linear (sound, CPU, {os.cpu_count()} threads) | {width(ll, lh):.6g} | {ours_ms:.1f} ms |")
    for (method, dtype), (l, u, ms) in res.items():
        print(f"| auto_LiRPA {method} {str(dtype).split('.')[-1]} (GPU, not sound) | {width(l, u):.6g} | {ms:.1f} ms |")
    crown32_ms = res[("CROWN", torch.float32)][2]
    print(f"libvram GPU linear bounds: {crown32_ms / gpu_dev_ms:.1f} x auto_LiRPA float32 CROWN's speed with "
          f"the boxes as CUDA tensors (as auto_LiRPA takes them), {crown32_ms / gpu_ms:.1f} x with NumPy "
          f"arrays (copies to and from the GPU included)")
    print(f"libvram GPU linear_guarded: {crown32_ms / guarded_ms:.1f} x auto_LiRPA float32 CROWN's speed (CUDA tensors)")
    print(f"libvram GPU linear_both: {crown32_ms / both_ms:.1f} x auto_LiRPA float32 CROWN's speed (CUDA tensors)")
    assert (bl >= gl).all() and (bh <= gh).all(), "linear_both wider than linear"
    assert (ql >= gl).all() and (qh <= gh).all(), "linear_guarded wider than linear"
    for label, (l, u) in (("GPU", (gl, gh)), ("CPU", (ll, lh)), ("GPU linear_guarded", (ql, qh)),
                          ("CPU linear_guarded", (cql, cqh)), ("GPU linear_both", (bl, bh))):
        mx, q999, share = excess(l, u)
        print(f"libvram {label} width over float64 CROWN, relative: largest {mx:.3g}, "
              f"99.9th percentile {q999:.3g}, share above 1e-4: {100 * share:.3f} %")
        mx, q999, share = excess(l, u, (r32l, r32u))
        print(f"libvram {label} width over float64 CROWN rounded outward to float32, relative: "
              f"largest {mx:.3g}, 99.9th percentile {q999:.3g}, share above 1e-4: {100 * share:.3f} %")
    agree = np.abs(gl.astype(np.float64) - ll) <= 1e-6 * (1 + np.abs(ll)), np.abs(gh.astype(np.float64) - lh) <= 1e-6 * (1 + np.abs(lh))
    print(f"GPU and CPU linear bounds within 1e-6 relative: {100 * float(np.mean(agree[0] & agree[1])):.3f} % of outputs")
    agree = np.abs(ql.astype(np.float64) - cql) <= 1e-6 * (1 + np.abs(cql)), np.abs(qh.astype(np.float64) - cqh) <= 1e-6 * (1 + np.abs(cqh))
    print(f"GPU and CPU linear_guarded bounds within 1e-6 relative: {100 * float(np.mean(agree[0] & agree[1])):.3f} % of outputs")
    print(f"IBP / linear mean width: {width(il, ih) / width(gl, gh):.1f} x")
    head_to_head(data, name, lo, hi, layers)


def head_to_head(data, name, lo, hi, layers, reps=20):
    """The GPU methods and auto_LiRPA's float32 CROWN timed in turn, call by call, on the same
    boxes as CUDA tensors: the sequential timings above put libvram first in the process, and
    whatever the GPU or the process does early (clocks, allocator) then weighs on one side."""
    from auto_LiRPA import BoundedModule, BoundedTensor
    from auto_LiRPA.perturbations import PerturbationLpNorm

    with vram.Context(os.urandom(32), backend="cuda") as ctx:
        net = ctx.network_from_onnx(os.path.join(data, "onnx", name + ".onnx"))
        dlo, dhi = torch.from_numpy(lo).cuda(), torch.from_numpy(hi).cuda()
        model = torch_model(layers, torch.float32).cuda()
        bm = BoundedModule(model, torch.zeros(1, 5, device="cuda"), device="cuda")
        x = BoundedTensor((dlo + dhi) / 2, PerturbationLpNorm(norm=np.inf, x_L=dlo, x_U=dhi))
        calls = {
            "linear": lambda: net.propagate(dlo, dhi, method="linear"),
            "linear_guarded": lambda: net.propagate(dlo, dhi, method="linear_guarded"),
            "auto_LiRPA CROWN": lambda: bm.compute_bounds(x=(x,), method="CROWN"),
            # Without autograd's bookkeeping: how a caller who only wants the bounds runs it.
            "auto_LiRPA CROWN no_grad": lambda: no_grad(lambda: bm.compute_bounds(x=(x,), method="CROWN")),
        }
        times = {k: [] for k in calls}
        for fn in calls.values():
            fn()  # warm-up
        for _ in range(reps):
            for k, fn in calls.items():
                torch.cuda.synchronize()
                t = time.perf_counter()
                fn()
                torch.cuda.synchronize()
                times[k].append(1e3 * (time.perf_counter() - t))
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    for label in ("auto_LiRPA CROWN", "auto_LiRPA CROWN no_grad"):
        theirs = med[label]
        print(f"head to head, in turn, median of {reps}: {label.replace('CROWN', 'float32 CROWN')} {theirs:.2f} ms; "
              + "; ".join(f"libvram {k} {med[k]:.2f} ms ({theirs / med[k]:.1f} x)" for k in ("linear", "linear_guarded")))


def no_grad(fn):
    with torch.no_grad():
        return fn()


def outward32(l, u):
    """float64 bounds rounded outward to float32."""
    l32, u32 = l.astype(np.float32), u.astype(np.float32)
    l32 = np.where(l32.astype(np.float64) > l, np.nextafter(l32, np.float32(-np.inf)), l32)
    u32 = np.where(u32.astype(np.float64) < u, np.nextafter(u32, np.float32(np.inf)), u32)
    return l32, u32


def width(l, u):
    return float(np.mean(u.astype(np.float64) - l.astype(np.float64)))


if __name__ == "__main__":
    main()
