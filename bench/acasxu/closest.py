#!/usr/bin/env python3
"""How close an ACAS Xu instance comes to being violated: the largest "unsafe degree" found by
sampling the property's input box and then a local search, evaluated in float64 NumPy with the
network's float32 weights (from the NNet twin of the ONNX file; independent of libvram).

The unsafe degree of the property's output condition is, for an atom `a <= b`, `b - a`; for
`and`, the smallest of its parts; for `or`, the largest. It is >= 0 exactly at a
counterexample. A property that holds with a small margin (a degree close to 0 from below)
needs very fine sub-boxes near that point for any input-splitting search: this is a diagnosis
of why an instance is hard, not a proof of anything.

usage: closest.py NET.nnet PROP.vnnlib [SAMPLES] [SEED]   (needs numpy)
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import nnet_file  # noqa: E402
from check_witness import parse, value  # noqa: E402


def network(path):
    _, _, layers = nnet_file.read(path)
    # float32 weights, as sealed; float64 arithmetic.
    f64 = lambda v: np.array(v, np.float32).astype(np.float64)  # noqa: E731
    return [(f64(w), f64(b)) for w, b in layers]


def evaluate(layers, x):
    v = x
    for k, (w, b) in enumerate(layers):
        v = v @ w.T + b
        if k + 1 < len(layers):
            v = np.maximum(v, 0.0)
    return v


def degree(f, env):
    """`env` maps each output name `Y_j` to its column of values, one per point."""
    op, *args = f
    if op == "and":
        return np.min([degree(a, env) for a in args], axis=0)
    if op == "or":
        return np.max([degree(a, env) for a in args], axis=0)
    a, b = value(args[0], env), value(args[1], env)
    return b - a if op in ("<=", "<") else a - b


def main():
    net, prop = sys.argv[1:3]
    samples = int(sys.argv[3]) if len(sys.argv) > 3 else 200000
    rng = np.random.default_rng(int(sys.argv[4]) if len(sys.argv) > 4 else 0)
    forms = parse(open(prop).read())
    asserts = [f[1] for f in forms if f[0] == "assert"]
    n = sum(1 for f in forms if f[0] == "declare-const" and f[1].startswith("X_"))
    lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
    unsafe = []
    for a in asserts:
        if a[0] in ("<=", ">=") and isinstance(a[1], str) and a[1].startswith("X_"):
            i, v = int(a[1][2:]), float(a[2])
            if a[0] == "<=":
                hi[i] = min(hi[i], v)
            else:
                lo[i] = max(lo[i], v)
        else:
            unsafe.append(a)
    cond = ["and", *unsafe]
    layers = network(net)
    def score(x):
        y = evaluate(layers, x)
        return degree(cond, {f"Y_{j}": y[:, j] for j in range(y.shape[1])})

    x = lo + (hi - lo) * rng.random((samples, n))
    s = score(x)
    best = x[np.argsort(-s)[:64]]
    print(f"sampled {samples}: largest unsafe degree {s.max():.6g}")
    for it in range(300):
        step = (hi - lo) * 0.02 * 0.97**it
        moves = rng.normal(size=(len(best), 32, n)) * step
        cand = np.clip(best[:, None, :] + moves, lo, hi).reshape(-1, n)
        pool = np.vstack([best, cand])
        best = pool[np.argsort(-score(pool))[:64]]
    s = score(best)
    k = int(np.argmax(s))
    print(f"after local search: largest unsafe degree {s[k]:.6g} at x = {best[k].tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
