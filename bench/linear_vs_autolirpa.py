#!/usr/bin/env python3
"""libvram's sound linear bounds (IBP_METHOD_LINEAR, CPU) against auto_LiRPA 0.7.1's CROWN
(float32 and float64, on the GPU; not sound under floating point) and IBP, on the same ACAS Xu
boxes, measured in one run: mean output width (tightness), the largest relative excess of
libvram's width over float64 CROWN's, and time per batch.

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


def timed(fn, reps=5):
    out, times = None, []
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

    with vram.Context(os.urandom(32), backend="host") as ctx:
        net = ctx.network_from_onnx(os.path.join(data, "onnx", name + ".onnx"))
        (il, ih) = net.propagate(lo, hi)
        t = time.perf_counter()
        ll, lh = net.propagate(lo, hi, method="linear")
        ours_ms = 1e3 * (time.perf_counter() - t)

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

    def width(l, u):
        return float(np.mean(u - l))

    c64l, c64u, _ = res[("CROWN", torch.float64)]
    w_ours = lh.astype(np.float64) - ll.astype(np.float64)
    w_ref = c64u - c64l
    excess = float(np.max((w_ours - w_ref) / np.maximum(w_ref, 1e-300)))
    contains = bool(np.all(ll <= c64l + 1e-9) and np.all(lh >= c64u - 1e-9))
    print("| bounds | mean width | time per batch |")
    print("|---|---|---|")
    print(f"| libvram IBP (sound, CPU) | {width(il, ih):.6g} | |")
    print(f"| libvram linear (sound, CPU, {os.cpu_count()} threads) | {width(ll, lh):.6g} | {ours_ms:.1f} ms |")
    for (method, dtype), (l, u, ms) in res.items():
        print(f"| auto_LiRPA {method} {str(dtype).split('.')[-1]} (GPU, not sound) | {width(l, u):.6g} | {ms:.1f} ms |")
    print(f"largest relative width excess of libvram linear over float64 CROWN: {excess:.3g}")
    print(f"libvram linear bounds contain float64 CROWN's on every box and output: {contains}")
    print(f"IBP / linear mean width: {width(il, ih) / width(ll, lh):.1f} x")


if __name__ == "__main__":
    main()
