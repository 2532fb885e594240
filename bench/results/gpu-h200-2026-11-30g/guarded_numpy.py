"""The guarded relaxation in plain float64 NumPy (README.md here): on the 16 384 boxes of
bench/linear_vs_autolirpa.py, how many outputs each variant leaves more than 1e-4 wider than
textbook CROWN, and the extra backward-pass work (rows x depth).

  python3 bench/results/gpu-h200-2026-11-30g/guarded_numpy.py 16384   (about 5 min on 2 cores)
"""
import os, sys
from pathlib import Path
ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bench"))
import numpy as np, nnet_file
from multiprocessing import Pool

data = str(ROOT.parent / "shared" / "data" / "acasxu")
layers = [(np.array(w, dtype=np.float64), np.array(b, dtype=np.float64)) for w, b in nnet_file.read(os.path.join(data, "nnet", "ACASXU_experimental_v2a_1_1.nnet"))[2]]
L = len(layers)

def backward(pre, a, m, xl, xu):
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

def run(xl, xu, mode, start=0, pre0=None, first_all=False):
    # mode: lib (IBP-unstable, intersected), raw (IBP-unstable, alone), text (all, alone)
    pre = list(pre0[:start]) if pre0 else []
    first = None; cost = 0
    for m in range(start, L):
        w, b = layers[m]
        il, iu = (xl, xu) if m == 0 else (np.maximum(pre[-1][0], 0), np.maximum(pre[-1][1], 0))
        wp, wn = np.maximum(w, 0), np.minimum(w, 0)
        lo, hi = wp @ il + wn @ iu + b, wp @ iu + wn @ il + b
        last = m + 1 == L
        if m > 0:
            if last or mode in ("text", "ref") or (first_all and m == start):
                sel = np.arange(len(b))
            else:
                sel = np.where((lo < 0) & (hi > 0))[0]
            if pre0 and m == start:
                # The neurons the first pass bounded here keep its bounds from before the
                # intersection: only the others (those IBP decides) cost new backward passes.
                if first_all or mode == "text":
                    cost += 2 * int(((lo >= 0) | (hi <= 0)).sum()) * m
            else:
                cost += 2 * len(sel) * m
            if len(sel):
                r = backward(pre, np.concatenate([w[sel], -w[sel]]), m, xl, xu) + np.concatenate([b[sel], -b[sel]])
                n = len(sel); rl, ru = r[:n], -r[n:]
                if (last and mode != "ref") or mode == "lib":
                    nl, nu = np.maximum(lo[sel], rl), np.minimum(hi[sel], ru)
                    if not last and first is None and np.any((nl != rl) | (nu != ru)):
                        first = m
                else:
                    nl, nu = rl, ru
                lo[sel], hi[sel] = nl, nu
        pre.append((lo, hi))
    return pre, first, cost

def one(c):
    xl, xu = (c - np.float32(0.01)).astype(np.float64), (c + np.float32(0.01)).astype(np.float64)
    pl, k0, c0 = run(xl, xu, "lib")
    cl, ch = run(xl, xu, "ref")[0][-1]
    wc = ch - cl
    def exc(lo, hi):
        e = ((hi - lo) - wc) / np.maximum(wc, 1e-300)
        return int((e > 1e-4).sum()), float(e.max())
    ll, lh = pl[-1]
    res = {"lib": exc(ll, lh), "flag": k0 is not None, "c_lib": c0}
    V = {"v1": ("raw", k0, False), "v1a": ("raw", k0, True), "v2": ("text", k0, False)}
    if k0 is None:
        for v in V: res[v] = res["lib"]; res["c_" + v] = 0
        return res
    for v, (mode, st, fa) in V.items():
        pr, _, cv = run(xl, xu, mode, st, pl, fa)
        ol, oh = pr[-1]
        res[v] = exc(np.maximum(ll, ol), np.minimum(lh, oh)); res["c_" + v] = cv
    return res

if __name__ == "__main__":
    n = int(sys.argv[1])
    centre = np.random.default_rng(7).uniform(-0.4, 0.4, size=(16384, 5)).astype(np.float32)
    with Pool(2) as p:
        out = p.map(one, list(centre[:n]), chunksize=64)
    print(f"boxes {n}, flagged {sum(r['flag'] for r in out)}")
    tot = sum(r["c_lib"] for r in out)
    for v in ("lib", "v1", "v1a", "v2"):
        cnt = sum(r[v][0] for r in out); mx = max(r[v][1] for r in out)
        extra = sum(r["c_" + v] for r in out) / tot if v != "lib" else 0
        print(f"{v}: excess outputs {cnt}, largest relative excess {mx:.3g}, extra row-depth work {100*extra:.1f}%")
