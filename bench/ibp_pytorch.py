#!/usr/bin/env python3
"""PyTorch baseline for bench/ibp_gpu.rs, on the same networks and boxes (read from the raw
files that benchmark wrote): interval bound propagation the way auto_LiRPA computes it (centre
W·c + b and radius |W|·r per linear layer, fp32, TF32 off, |W| precomputed outside the timing),
timed with CUDA events (median). Also checks, per output bound:
  - how many PyTorch fp32 bounds fail to enclose libvram's (a sound result encloses the exact
    bounds; plain fp32 often does not);
  - that libvram's bounds enclose a float64 IBP of the same network, and by how much wider.
Prints one Markdown table. usage: ibp_pytorch.py [DIR]   (default /tmp/ibpbench)
"""
import json
import os
import sys

import numpy as np
import torch

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
dev = torch.device("cuda")


def load(path, shape=None):
    a = np.fromfile(path, dtype="<f4")
    return torch.from_numpy(a if shape is None else a.reshape(shape))


def ibp(layers, lo, hi, abs_w):
    """layers: [(W, b, relu_after)], boxes [batch, n]."""
    for (w, b, relu), aw in zip(layers, abs_w):
        c = (hi + lo) / 2
        r = (hi - lo) / 2
        c = c @ w.T + b
        r = r @ aw.T
        lo, hi = c - r, c + r
        if relu:
            lo, hi = lo.clamp_min(0), hi.clamp_min(0)
    return lo, hi


def ibp_cifar(convs, fcs, lo, hi, abs_c, abs_f):
    """conv(3x3, stride 2, pad 1) + ReLU twice, flatten, linear + ReLU, linear."""
    F = torch.nn.functional
    for (w, b), aw in zip(convs, abs_c):
        c, r = (hi + lo) / 2, (hi - lo) / 2
        c = F.conv2d(c, w, b, stride=2, padding=1)
        r = F.conv2d(r, aw, None, stride=2, padding=1)
        lo, hi = (c - r).clamp_min(0), (c + r).clamp_min(0)
    lo, hi = lo.flatten(1), hi.flatten(1)
    layers = [(w, b, k == 0) for k, (w, b) in enumerate(fcs)]
    return ibp(layers, lo, hi, abs_f)


def timed(fn, runs):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    times.sort()
    return times[len(times) // 2]


def nnet_layers(path):
    rows = [l for l in open(path) if not l.startswith("//")]
    vals = [[float(t) for t in l.split(",") if t.strip()] for l in rows]
    nl, sizes = int(vals[0][0]), [int(v) for v in vals[1]]
    norm = vals[3:7]
    p, layers = 7, []
    for k in range(nl):
        w = np.array(vals[p:p + sizes[k + 1]], dtype=np.float64)
        p += sizes[k + 1]
        b = np.array([v[0] for v in vals[p:p + sizes[k + 1]]], dtype=np.float64)
        p += sizes[k + 1]
        layers.append((w, b, k + 1 < nl))
    return norm, layers


def report(name, batch, ours_ms, ms, p_lo, p_hi, r_lo, r_hi, ours_lo, ours_hi):
    n = p_lo.numel()
    not_ours = int(((p_lo > ours_lo) | (p_hi < ours_hi)).sum())
    not_f64 = int(((p_lo > r_lo) | (p_hi < r_hi)).sum())
    # f64 IBP itself carries rounding error ~1e-13 relative; allow that much.
    tol = 1e-12 * (r_lo.abs() + r_hi.abs() + 1e-30)
    encloses = bool(((ours_lo <= r_lo + tol) & (ours_hi >= r_hi - tol)).all())
    w_ref = (r_hi - r_lo).clamp_min(1e-30)
    excess = float((((ours_hi - ours_lo) - (r_hi - r_lo)) / w_ref).max())
    print(f"| {name} | {batch} | {ours_ms:.3f} | {ms:.3f} | {ms / ours_ms:.2f}x | {100 * not_ours / n:.1f} % | "
          f"{100 * not_f64 / n:.1f} % | {'yes' if encloses else 'NO'} | {excess:.1e} |")
    sys.stdout.flush()


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "/tmp/ibpbench"
    meta = json.load(open(os.path.join(root, "meta.json")))
    print("| network | batch | libvram (ms) | PyTorch fp32 IBP (ms) | speed-up | PyTorch bounds not enclosing libvram's | PyTorch fp32 bounds not enclosing f64 | libvram encloses f64 IBP | libvram max excess width vs f64 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for m in meta:
        name, batch = m["name"], m["batch"]
        d = os.path.join(root, name)
        if m["kind"] == "mlp":
            width, depth = m["width"], m["depth"]
            layers64 = [(load(f"{d}/w{l}.bin", (width, width)).double(), load(f"{d}/b{l}.bin").double(), l + 1 < depth) for l in range(depth)]
            lo32, hi32 = load(f"{d}/lo_{batch}.bin", (batch, width)), load(f"{d}/hi_{batch}.bin", (batch, width))
            lo64, hi64 = lo32.double(), hi32.double()
        elif m["kind"] == "cifar":
            convs = [(load(f"{d}/conv{k}_w.bin", shape).double(), load(f"{d}/conv{k}_b.bin").double())
                     for k, shape in enumerate([(32, 3, 3, 3), (64, 32, 3, 3)])]
            fcs = [(load(f"{d}/fc{k}_w.bin", shape).double(), load(f"{d}/fc{k}_b.bin").double())
                   for k, shape in enumerate([(512, 4096), (10, 512)])]
            lo32 = load(f"{d}/lo_{batch}.bin", (batch, 3, 32, 32))
            hi32 = load(f"{d}/hi_{batch}.bin", (batch, 3, 32, 32))
            ours_lo = load(f"{d}/ours_lo_{batch}.bin").double().reshape(batch, -1)
            ours_hi = load(f"{d}/ours_hi_{batch}.bin").double().reshape(batch, -1)
            c32 = [(w.float().to(dev), b.float().to(dev)) for w, b in convs]
            f32_ = [(w.float().to(dev), b.float().to(dev)) for w, b in fcs]
            ac, af = [w.abs() for w, _ in c32], [w.abs() for w, _ in f32_]
            x_lo, x_hi = lo32.to(dev), hi32.to(dev)
            ms = timed(lambda: ibp_cifar(c32, f32_, x_lo, x_hi, ac, af), 10)
            p_lo, p_hi = (t.double().cpu() for t in ibp_cifar(c32, f32_, x_lo, x_hi, ac, af))
            c64 = [(w.to(dev), b.to(dev)) for w, b in convs]
            f64_ = [(w.to(dev), b.to(dev)) for w, b in fcs]
            r_lo, r_hi = (t.cpu() for t in ibp_cifar(c64, f64_, lo32.double().to(dev), hi32.double().to(dev),
                                                      [w.abs() for w, _ in c64], [w.abs() for w, _ in f64_]))
            report(name, batch, m["ms"], ms, p_lo, p_hi, r_lo, r_hi, ours_lo, ours_hi)
            continue
        else:
            norm, raw = nnet_layers(m["path"])
            layers64 = [(torch.from_numpy(w), torch.from_numpy(b), relu) for w, b, relu in raw]
            lo32, hi32 = load(f"{d}/lo_{batch}.bin", (batch, 5)), load(f"{d}/hi_{batch}.bin", (batch, 5))
            mn, mx, mean, rng = (torch.tensor(v[:5], dtype=torch.float64) for v in norm)
            lo64 = (lo32.double().clamp(mn, mx) - mean) / rng
            hi64 = (hi32.double().clamp(mn, mx) - mean) / rng
            # libvram was given f32 weights (the file's, rounded): the f64 reference uses those.
            layers64 = [(w.float().double(), b.float().double(), r) for w, b, r in layers64]
        ours_lo = load(f"{d}/ours_lo_{batch}.bin").double().reshape(batch, -1)
        ours_hi = load(f"{d}/ours_hi_{batch}.bin").double().reshape(batch, -1)

        l32 = [(w.float().to(dev), b.float().to(dev), r) for w, b, r in layers64]
        a32 = [w.abs() for w, _, _ in l32]
        x_lo, x_hi = lo64.float().to(dev), hi64.float().to(dev)
        runs = 5 if batch >= 1024 else 20
        ms = timed(lambda: ibp(l32, x_lo, x_hi, a32), runs)
        p_lo, p_hi = (t.double().cpu() for t in ibp(l32, x_lo, x_hi, a32))

        l64 = [(w.to(dev), b.to(dev), r) for w, b, r in layers64]
        r_lo, r_hi = (t.cpu() for t in ibp(l64, lo64.to(dev), hi64.to(dev), [w.abs() for w, _, _ in l64]))
        del l32, a32, l64

        report(name, batch, m["ms"], ms, p_lo, p_hi, r_lo, r_hi, ours_lo, ours_hi)


if __name__ == "__main__":
    main()
