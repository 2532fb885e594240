#!/usr/bin/env python3
"""Where libvram's linear bounds are wider than CROWN's, without any rounding: both algorithms
re-implemented in plain float64 NumPy (no outward rounding) on the boxes of
linear_vs_autolirpa.py (ACAS Xu 1_1, 16 384 boxes of half-width 0.01, seed 7).

- "crown": auto_LiRPA's CROWN: every intermediate bound by a backward pass, adaptive lower
  slopes (1 where u > -l), chords above; its mean width matches auto_LiRPA 0.7.1's float64
  CROWN to the printed digits.
- "libvram": IBP of each layer from the previous layer's bounds, a backward pass for the
  neurons IBP leaves unstable (and every output), intersected with IBP.
(Both are guard_selection_f64.bounds, "textbook" and "intersected".)

Prints the mean widths and the share of box-outputs where libvram's width exceeds CROWN's by
more than 1e-4 relative: that share is the algorithm's, not floating point's.

usage: linear_excess_f64.py ACASXU_DIR [BOXES]"""
import os
import sys

import numpy as np

import nnet_file
from guard_selection_f64 import bounds


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
            lo, hi = bounds(layers, xl, xu, "intersected" if lib else "textbook")
            widths[lib].append(hi - lo)
        excess.extend((widths[True][-1] - widths[False][-1]) / np.maximum(widths[False][-1], 1e-300))
    e = np.array(excess)
    print(f"ACAS Xu 1_1, {n} boxes, plain float64: mean width libvram {np.mean(widths[True]):.6g}, "
          f"CROWN {np.mean(widths[False]):.6g}")
    print(f"libvram wider than CROWN by more than 1e-4 relative: {100 * np.mean(e > 1e-4):.3f} % of "
          f"box-outputs, at most {e.max():.3g}")


if __name__ == "__main__":
    main()
