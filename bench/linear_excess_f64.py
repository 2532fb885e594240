#!/usr/bin/env python3
"""Where libvram's linear bounds are wider than CROWN's, without any rounding: both algorithms
re-implemented in plain float64 NumPy (no outward rounding) on the boxes of
linear_vs_autolirpa.py (ACAS Xu 1_1, 16 384 boxes of half-width 0.01, seed 7).

- "crown": auto_LiRPA's CROWN: every intermediate bound by a backward pass, adaptive lower
  slopes (1 where u > -l), chords above; its mean width matches auto_LiRPA 0.7.1's float64
  CROWN to the printed digits.
- "libvram": IBP of each layer from the previous layer's bounds, a backward pass for the
  neurons IBP leaves unstable (and every output), intersected with IBP.

Prints the mean widths and the share of box-outputs where libvram's width exceeds CROWN's by
more than 1e-4 relative: that share is the algorithm's, not floating point's.

usage: linear_excess_f64.py ACASXU_DIR [BOXES]"""
import os
import sys

import numpy as np

import nnet_file


def bounds(layers, xl, xu, libvram):
    pre = []

    def backward(a, m):
        const = np.zeros(a.shape[0])
        for k in range(m - 1, -1, -1):
            l, u = pre[k]
            unst = (l < 0) & (u > 0)
            s = np.where(unst, u / np.where(unst, u - l, 1), 0)
            mu = np.where((l >= 0)[None, :], a, 0.0)
            mu = np.where((a > 0) & unst[None, :] & (u > -l)[None, :], a, mu)
            neg = (a < 0) & unst[None, :]
            mu = np.where(neg, a * s[None, :], mu)
            const += np.sum(np.where(neg, -a * s[None, :] * l[None, :], 0), axis=1)
            w, b = layers[k]
            const += mu @ b
            a = mu @ w
        return const + np.sum(np.minimum(a * xl, a * xu), axis=1)

    for m, (w, b) in enumerate(layers):
        il, iu = (xl, xu) if m == 0 else (np.maximum(pre[-1][0], 0), np.maximum(pre[-1][1], 0))
        wp, wn = np.maximum(w, 0), np.minimum(w, 0)
        lo, hi = wp @ il + wn @ iu + b, wp @ iu + wn @ il + b
        if m > 0:
            last = m + 1 == len(layers)
            sel = np.where((lo < 0) & (hi > 0))[0] if libvram and not last else np.arange(len(b))
            if len(sel):
                r = backward(np.concatenate([w[sel], -w[sel]]), m) + np.concatenate([b[sel], -b[sel]])
                n = len(sel)
                if libvram:
                    lo[sel], hi[sel] = np.maximum(lo[sel], r[:n]), np.minimum(hi[sel], -r[n:])
                else:
                    lo[sel], hi[sel] = r[:n], -r[n:]
        pre.append((lo, hi))
    return pre[-1]


def main():
    data, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 16384
    path = os.path.join(data, "nnet", "ACASXU_experimental_v2a_1_1.nnet")
    layers = [(np.array(w, dtype=np.float64), np.array(b, dtype=np.float64)) for w, b in nnet_file.read(path)[2]]
    centre = np.random.default_rng(7).uniform(-0.4, 0.4, size=(16384, 5)).astype(np.float32)
    widths = {True: [], False: []}
    excess = []
    for c in centre[:n]:
        xl, xu = (c - np.float32(0.01)).astype(np.float64), (c + np.float32(0.01)).astype(np.float64)
        for lib in (True, False):
            lo, hi = bounds(layers, xl, xu, lib)
            widths[lib].append(hi - lo)
        excess.extend((widths[True][-1] - widths[False][-1]) / np.maximum(widths[False][-1], 1e-300))
    e = np.array(excess)
    print(f"ACAS Xu 1_1, {n} boxes, plain float64: mean width libvram {np.mean(widths[True]):.6g}, "
          f"CROWN {np.mean(widths[False]):.6g}")
    print(f"libvram wider than CROWN by more than 1e-4 relative: {100 * np.mean(e > 1e-4):.3f} % of "
          f"box-outputs, at most {e.max():.3g}")


if __name__ == "__main__":
    main()
