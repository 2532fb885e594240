#!/usr/bin/env python3
"""Checks a VNN-COMP `sat` result independently of libvram: the counterexample input must lie
in the property's input box and, evaluated in float64 (with the network's float32 weights,
read here from the NNet twin of the ONNX file), satisfy one case of the property's unsafe
condition. With onnxruntime installed, the ONNX file is also run in float32 and must agree.

usage: check_witness.py NET.nnet NET.onnx PROP.vnnlib RESULT_FILE   (exit 0: confirmed)
"""
import re
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import nnet_file  # noqa: E402


def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def nnet(path, x):
    _, _, layers = nnet_file.read(path)
    v = list(x)
    for k, (w, b) in enumerate(layers):
        v = [sum(f32(wj) * xj for wj, xj in zip(row, v)) + f32(bi) for row, bi in zip(w, b)]
        if k + 1 < len(layers):
            v = [max(s, 0.0) for s in v]
    return v


def parse(text):
    toks = re.findall(r"\(|\)|[^\s()]+", re.sub(r";[^\n]*", "", text))
    pos = 0

    def expr():
        nonlocal pos
        t = toks[pos]
        pos += 1
        if t != "(":
            return t
        out = []
        while toks[pos] != ")":
            out.append(expr())
        pos += 1
        return out

    forms = []
    while pos < len(toks):
        forms.append(expr())
    return forms


def value(term, env):
    if isinstance(term, list):
        op, *args = term
        vals = [value(a, env) for a in args]
        if op == "+":
            return sum(vals)
        if op == "-":
            return vals[0] - sum(vals[1:]) if len(vals) > 1 else -vals[0]
        if op == "*":
            p = 1.0
            for v in vals:
                p *= v
            return p
        raise ValueError(op)
    return env[term] if term in env else float(term)


def holds(f, env):
    op, *args = f
    if op == "and":
        return all(holds(a, env) for a in args)
    if op == "or":
        return any(holds(a, env) for a in args)
    a, b = value(args[0], env), value(args[1], env)
    return {"<=": a <= b, ">=": a >= b, "<": a < b, ">": a > b}[op]


def main():
    net, onnx, prop, result = sys.argv[1:5]
    text = open(result).read().split(None, 1)
    if not text or text[0] != "sat":
        print("not a sat result")
        return 1
    env = {k: float(v) for k, v in re.findall(r"\((\w+)\s+([^\s()]+)\)", text[1])}
    xs = sorted((k for k in env if k.startswith("X_")), key=lambda k: int(k[2:]))
    x = [env[k] for k in xs]
    y = nnet(net, x)
    model = {f"X_{i}": v for i, v in enumerate(x)}
    model.update({f"Y_{j}": v for j, v in enumerate(y)})
    asserts = [f[1] for f in parse(open(prop).read()) if f[0] == "assert"]
    ok = all(holds(a, model) for a in asserts)
    print(f"f64 evaluation: {'confirmed' if ok else 'NOT confirmed'}; y = {y}")
    try:
        import numpy as np
        import onnxruntime as ort

        s = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
        i = s.get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        out = s.run(None, {i.name: np.array(x, dtype=np.float32).reshape(shape)})[0].ravel()
        model.update({f"Y_{j}": float(v) for j, v in enumerate(out)})
        ok_ort = all(holds(a, model) for a in asserts)
        print(f"onnxruntime float32: {'confirmed' if ok_ort else 'NOT confirmed'}; y = {list(out)}")
        ok = ok and ok_ort
    except ImportError:
        print("onnxruntime: not installed here (f64 check only)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
