#!/usr/bin/env python3
"""Can IBP_METHOD_LINEAR_GUARDED's second pass be given to fewer boxes, or be avoided? Plain
float64 NumPy (no outward rounding), on the boxes of linear_vs_autolirpa.py (ACAS Xu 1_1,
16 384 boxes of half-width 0.01, seed 7). `bounds` is also linear_excess_f64.py's.

The guarded method runs textbook CROWN again (from the first layer where it differs) on every
box where the intersection with IBP changed a bound, and keeps the better bound of each output:
never wider than textbook CROWN, at 1.2 x the time on the H200. This script asks whether a
narrower test or a cheaper relaxation keeps the outputs within 1e-4 of textbook CROWN:

- flags: the second pass only where the intersection changed a ReLU's adaptive lower slope
  (u > -l), or also where it moved a bound by more than a given share of the neuron's width;
- "slopes from the backward passes": one pass, intersected, but each unstable neuron's lower
  slope chosen from its backward-pass bounds alone (as textbook CROWN would choose, given the
  same layers below);
- "relaxations from the backward passes": also the chords from those bounds (the
  intersection then only decides which neurons are stable, and the next layer's IBP);
- "two output passes": the intersected pass, and its output rows a second time through the
  relaxations from the backward passes' own bounds, the better of the two.

Prints, per variant, the share of boxes given a second pass and the share of box-outputs more
than 1e-4 (relative) wider than textbook CROWN.

usage: guard_selection_f64.py ACASXU_DIR [BOXES]"""
import collections
import os
import sys

import numpy as np

import nnet_file


def backward(layers, pre, rel, a, m, xl, xu, pick=None):
    """Lower bounds of rows `a` over layer m's pre-activations: ReLU k is unstable by pre[k]
    (the bounds in force), its chord from rel[k], its lower slope (1 where u > -l) from pick[k]
    (default rel[k])."""
    const = np.zeros(a.shape[0])
    for k in range(m - 1, -1, -1):
        (l, u), (rl, ru) = pre[k], rel[k]
        pl, pu = (pick or rel)[k]
        unst = (l < 0) & (u > 0)
        s = np.where(unst, ru / np.where(unst, ru - rl, 1), 0)
        mu = np.where((l >= 0)[None, :], a, 0.0)
        mu = np.where((a > 0) & unst[None, :] & (pu > -pl)[None, :], a, mu)
        neg = (a < 0) & unst[None, :]
        mu = np.where(neg, a * s[None, :], mu)
        const += np.sum(np.where(neg, -a * s[None, :] * rl[None, :], 0), axis=1)
        w, b = layers[k]
        const += mu @ b
        a = mu @ w
    return const + np.sum(np.minimum(a * xl, a * xu), axis=1)


def bounds(layers, xl, xu, mode, log=None):
    """Output bounds. mode: "textbook", "intersected", "slopes" (lower slopes from the backward
    passes' bounds), "relax" (slopes and chords from them), "two" (intersected, and the output
    rows again through the backward passes' own bounds). `log` gets, per tightened layer:
    (layer, intersection changed a bound, changed a lower-slope choice, largest move / width)."""
    pre, raw = [], []
    for m, (w, b) in enumerate(layers):
        il, iu = (xl, xu) if m == 0 else (np.maximum(pre[-1][0], 0), np.maximum(pre[-1][1], 0))
        wp, wn = np.maximum(w, 0), np.minimum(w, 0)
        lo, hi = wp @ il + wn @ iu + b, wp @ iu + wn @ il + b
        rlo, rhi = lo.copy(), hi.copy()
        last = m + 1 == len(layers)
        if m > 0:
            unstable = (lo < 0) & (hi > 0)
            sel = np.arange(len(b)) if mode == "textbook" or last else np.where(unstable)[0]
            if len(sel):
                a = np.concatenate([w[sel], -w[sel]])
                rel = raw if mode == "relax" else pre
                pick = raw if mode == "slopes" else None
                r = backward(layers, pre, rel, a, m, xl, xu, pick) + np.concatenate([b[sel], -b[sel]])
                n = len(sel)
                rl, rh = r[:n], -r[n:]
                if mode == "two" and last:
                    r2 = backward(layers, pre, raw, a, m, xl, xu) + np.concatenate([b[sel], -b[sel]])
                    rl, rh = np.maximum(rl, r2[:n]), np.minimum(rh, -r2[n:])
                rlo[sel], rhi[sel] = rl, rh
                if mode == "textbook":
                    lo[sel], hi[sel] = rl, rh
                else:
                    nl, nh = np.maximum(lo[sel], rl), np.minimum(hi[sel], rh)
                    if log is not None and not last:
                        flip = ((rh > -rl) != (nh > -nl)) & (nl < 0) & (nh > 0)
                        move = np.maximum(np.abs(nl - rl), np.abs(nh - rh)) / (rh - rl)
                        log.append((m, bool(((nl != rl) | (nh != rh)).any()), bool(flip.any()),
                                    float(np.max(move, initial=0.0))))
                    lo[sel], hi[sel] = nl, nh
        pre.append((lo, hi))
        raw.append((rlo, rhi))
    return pre[-1]


def excess(w, ref):
    return (w - ref) / np.maximum(ref, 1e-300)


def main():
    data, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 16384
    path = os.path.join(data, "nnet", "ACASXU_experimental_v2a_1_1.nnet")
    layers = [(np.array(w, dtype=np.float64), np.array(b, dtype=np.float64)) for w, b in nnet_file.read(path)[2]]
    centre = np.random.default_rng(7).uniform(-0.4, 0.4, size=(16384, 5)).astype(np.float32)
    boxes = []
    for c in centre[:n]:
        xl, xu = (c - np.float32(0.01)).astype(np.float64), (c + np.float32(0.01)).astype(np.float64)
        log = []
        tb = bounds(layers, xl, xu, "textbook")
        it = bounds(layers, xl, xu, "intersected", log)
        boxes.append((tb, it, log, xl, xu))

    def guarded(flagged):
        e = []
        for (tb, (lo, hi), _, _, _), f in zip(boxes, flagged):
            if f:
                lo, hi = np.maximum(lo, tb[0]), np.minimum(hi, tb[1])
            e.extend(excess(hi - lo, tb[1] - tb[0]))
        return np.array(e)

    print(f"ACAS Xu 1_1, {n} boxes of half-width 0.01, plain float64")
    k0 = collections.Counter(next((x[0] for x in log if x[1]), None) for _, _, log, _, _ in boxes)
    print("first layer where the intersection changed a bound (k0), boxes: "
          + ", ".join(f"{k}: {v}" for k, v in sorted(k0.items(), key=lambda kv: -1 if kv[0] is None else kv[0])))
    print("| second pass where | boxes | outputs > 1e-4 wider than textbook CROWN | largest |")
    print("|---|---|---|---|")
    flags = {
        "never (IBP_METHOD_LINEAR)": [False] * n,
        "the intersection changed a bound (IBP_METHOD_LINEAR_GUARDED)": [any(x[1] for x in b[2]) for b in boxes],
        "it changed a lower-slope choice": [any(x[2] for x in b[2]) for b in boxes],
    }
    for share in (0.01, 0.05, 0.1, 0.2):
        flags[f"it changed a slope choice or moved a bound by > {share:g} of its width"] = [
            any(x[2] or x[3] > share for x in b[2]) for b in boxes]
    for label, f in flags.items():
        e = guarded(f)
        print(f"| {label} | {100 * np.mean(f):.2f} % | {100 * np.mean(e > 1e-4):.3f} % | {e.max():.3g} |")
    print("| one pass, then: | mean width | outputs > 1e-4 wider than textbook CROWN | largest |")
    print("|---|---|---|---|")
    tb_w = np.concatenate([b[0][1] - b[0][0] for b in boxes])
    print(f"| textbook CROWN | {tb_w.mean():.6g} | | |")
    for mode, label in (("intersected", "intersected (IBP_METHOD_LINEAR)"),
                        ("slopes", "lower slopes from the backward passes' bounds"),
                        ("relax", "slopes and chords from the backward passes' bounds"),
                        ("two", "two output passes, the better bound")):
        # (The intersected pass ran above.)
        w = np.concatenate([it[1] - it[0] if mode == "intersected" else np.subtract(*bounds(layers, xl, xu, mode)[::-1])
                            for _, it, _, xl, xu in boxes])
        e = excess(w, tb_w)
        print(f"| {label} | {w.mean():.6g} | {100 * np.mean(e > 1e-4):.3f} % | {e.max():.3g} |")


if __name__ == "__main__":
    main()
