#!/usr/bin/env python3
"""The baseline of bench/host_ibp.rs: plain NumPy float64 IBP (centre-radius, no rounding
control, so NOT sound) over an NNet network, for batches of boxes. Prints one line per batch:
`numpy_f64 BATCH MEDIAN_MS`.

usage: ibp_numpy.py NET.nnet BATCH... (boxes: the file's input range, half-width 1 % of it)"""
import sys
import time

import numpy as np

import nnet_file


def load(path):
    _, norm, raw = nnet_file.read(path)
    lo, hi, mean, rng = (np.array(r) for r in norm)
    layers = []
    for w, b in raw:
        w = np.array(w, dtype=np.float64)
        layers.append((w, np.abs(w), np.array(b, dtype=np.float64)))
    return lo, hi, mean, rng, layers


def ibp(lo, hi, mn, mx, mean, rng, layers):
    lo = (np.clip(lo, mn, mx) - mean) / rng
    hi = (np.clip(hi, mn, mx) - mean) / rng
    for k, (w, aw, b) in enumerate(layers):
        c, r = (lo + hi) / 2, (hi - lo) / 2
        c, r = c @ w.T + b, r @ aw.T
        lo, hi = c - r, c + r
        if k + 1 < len(layers):
            lo, hi = np.maximum(lo, 0), np.maximum(hi, 0)
    return lo, hi


def main():
    mn, mx, mean, rng, layers = load(sys.argv[1])
    gen = np.random.default_rng(1)
    for batch in map(int, sys.argv[2:]):
        c = mn + gen.random((batch, len(mn))) * (mx - mn)
        lo, hi = c - 0.01 * (mx - mn), c + 0.01 * (mx - mn)
        times = []
        for _ in range(max(5, 2000 // batch)):
            t = time.perf_counter()
            ibp(lo, hi, mn, mx, mean, rng, layers)
            times.append(time.perf_counter() - t)
        print(f"numpy_f64 {batch} {1e3 * sorted(times)[len(times) // 2]:.4f}")


if __name__ == "__main__":
    main()
