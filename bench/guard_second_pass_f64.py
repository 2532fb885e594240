#!/usr/bin/env python3
"""Can IBP_METHOD_LINEAR_GUARDED's second pass do less work? Plain float64 NumPy, on the boxes
of linear_vs_autolirpa.py (ACAS Xu 1_1, 16 384 boxes of half-width 0.01, seed 7).

The second pass (RESUME in cuda/crown.cu) starts at k0, the first layer where the first pass's
intersection with IBP changed a bound. There it bounds again the neurons IBP decides, and the
others keep the first pass's backward-pass bounds. Past k0 it bounds, by backward passes
without the intersection, every neuron that its own IBP leaves unstable. The "lean" variant
does less:
- nothing again at k0;
- past k0, only the neurons that the first pass's final bounds also leave unstable (the others
  keep those bounds, which are sound and decide them).

Prints each variant's work (backward-pass rows x layers, against the first pass's), and the
share of box-outputs where the better of the two passes is more than 1e-4 (relative) wider
than textbook CROWN.

usage: guard_second_pass_f64.py ACASXU_DIR [BOXES]"""
import os
import sys

import numpy as np

import nnet_file
from guard_selection_f64 import backward, bounds


def run(layers, xl, xu, mode, first=None, k0=None, work=None):
    """mode "first": the intersected pass; returns every layer's bounds, k0 (None if the
    intersection changed nothing) and k0's bounds before the intersection. "resume" and "lean":
    the second pass from k0 (below it, the first pass's bounds); returns the output bounds.
    `work[0]` gets the tightening passes' rows x layers."""
    pre, k0_first, raw_k0 = [], None, None
    for m, (w, b) in enumerate(layers):
        last = m + 1 == len(layers)
        if mode != "first" and m < k0:
            pre.append(first["pre"][m])
            continue
        il, iu = (xl, xu) if m == 0 else (np.maximum(pre[-1][0], 0), np.maximum(pre[-1][1], 0))
        wp, wn = np.maximum(w, 0), np.minimum(w, 0)
        lo, hi = wp @ il + wn @ iu + b, wp @ iu + wn @ il + b
        if m > 0:
            unst = (lo < 0) & (hi > 0)
            if first is not None:
                fl, fh = first["pre"][m]
                first_unst = (fl < 0) & (fh > 0)
            if last:
                sel = np.arange(len(b))
            elif mode == "first":
                sel = np.where(unst)[0]
            elif mode == "resume":
                sel = np.where(~unst if m == k0 else unst)[0]
            else:
                sel = np.array([], dtype=int) if m == k0 else np.where(unst & first_unst)[0]
            if len(sel):
                a = np.concatenate([w[sel], -w[sel]])
                r = backward(layers, pre, pre, a, m, xl, xu) + np.concatenate([b[sel], -b[sel]])
                if work is not None and not last:
                    work[0] += 2 * len(sel) * m
                n = len(sel)
                rl, rh = r[:n], -r[n:]
                if mode == "first":
                    nl, nh = np.maximum(lo[sel], rl), np.minimum(hi[sel], rh)
                    if k0_first is None and not last and ((nl != rl) | (nh != rh)).any():
                        k0_first, raw_k0 = m, (lo.copy(), hi.copy())
                        raw_k0[0][sel], raw_k0[1][sel] = rl, rh
                    lo[sel], hi[sel] = nl, nh
                else:
                    lo[sel], hi[sel] = rl, rh
            if mode == "resume" and m == k0:
                # k0's IBP-unstable neurons: the first pass's backward-pass bounds.
                u = np.where(unst)[0]
                lo[u], hi[u] = first["raw"][0][u], first["raw"][1][u]
            elif mode == "lean" and m == k0:
                lo, hi = first["raw"][0].copy(), first["raw"][1].copy()
            elif mode == "lean" and not last:
                # Neurons the first pass decided: its bounds.
                st = ~first_unst & unst
                lo[st], hi[st] = fl[st], fh[st]
        pre.append((lo, hi))
    return (pre, k0_first, raw_k0) if mode == "first" else pre[-1]


def main():
    data, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 16384
    path = os.path.join(data, "nnet", "ACASXU_experimental_v2a_1_1.nnet")
    layers = [(np.array(w, dtype=np.float64), np.array(b, dtype=np.float64)) for w, b in nnet_file.read(path)[2]]
    centre = np.random.default_rng(7).uniform(-0.4, 0.4, size=(16384, 5)).astype(np.float32)
    excess, work = {"resume": [], "lean": []}, {"first": [0], "resume": [0], "lean": [0]}
    for c in centre[:n]:
        xl, xu = (c - np.float32(0.01)).astype(np.float64), (c + np.float32(0.01)).astype(np.float64)
        tb = bounds(layers, xl, xu, "textbook")
        wt = tb[1] - tb[0]
        pre, k0, raw = run(layers, xl, xu, "first", work=work["first"])
        for mode in excess:
            lo, hi = pre[-1]
            if k0 is not None:
                r = run(layers, xl, xu, mode, first={"pre": pre, "raw": raw}, k0=k0, work=work[mode])
                lo, hi = np.maximum(lo, r[0]), np.minimum(hi, r[1])
            excess[mode].extend(((hi - lo) - wt) / np.maximum(wt, 1e-300))
    print(f"ACAS Xu 1_1, {n} boxes of half-width 0.01, plain float64")
    print("| second pass | its tightening rows x layers, against the first pass's | outputs > 1e-4 wider than textbook CROWN | largest |")
    print("|---|---|---|---|")
    for mode, label in (("resume", "as the GPU's (IBP_METHOD_LINEAR_GUARDED)"),
                        ("lean", "only neurons the first pass left unstable, none again at k0")):
        e = np.array(excess[mode])
        print(f"| {label} | {100 * work[mode][0] / work['first'][0]:.1f} % | {100 * np.mean(e > 1e-4):.3f} % | {e.max():.3g} |")


if __name__ == "__main__":
    main()
