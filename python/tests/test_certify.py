"""Verdicts from VNN-LIB properties through the Python package (ibp_certify)."""
import os
import tempfile

import pytest

import vram

# y = x0 - x1 + 0.5: one linear layer, inputs unclipped in [-10, 10].
NNET = "1,2,1,2,\n2,1,\n0,\n-10,-10,\n10,10,\n0,0,0,\n1,1,1,\n1,-1,\n0.5,\n"
BOX = ("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
       "(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (>= X_1 0))\n(assert (<= X_1 1))\n")


def write(d, name, text):
    p = os.path.join(d, name)
    with open(p, "w") as f:
        f.write(text)
    return p


def test_holds_violated_and_bad_properties():
    with tempfile.TemporaryDirectory() as d, vram.Context(os.urandom(32), backend="host") as ctx:
        net = ctx.network_from_nnet(write(d, "n.nnet", NNET))
        holds = net.certify(vram.Spec.from_vnnlib(write(d, "h.vnnlib", BOX + "(assert (<= Y_0 -0.6))\n")),
                            timeout=30)
        assert holds.kind == "holds" and holds.proven_fraction == 1.0
        assert holds.counterexample is None and len(holds.weights_root) == 32
        spec = vram.Spec.from_vnnlib(write(d, "v.vnnlib", BOX + "(assert (>= Y_0 1.4))\n"))
        assert (spec.input_count, spec.output_count, spec.case_count) == (2, 1, 1)
        seen = []
        v = net.certify(spec, timeout=30, progress=lambda boxes, proven: seen.append(proven) or True)
        assert v.kind == "violated"
        x0, x1 = v.counterexample
        assert 0 <= x0 <= 1 and 0 <= x1 <= 1 and x0 - x1 + 0.5 >= 1.4
        assert v.out_lower[0] <= x0 - x1 + 0.5 <= v.out_upper[0]
        assert v.weights_root == holds.weights_root
        with pytest.raises(vram.Error) as e:
            vram.Spec.from_vnnlib(write(d, "bad.vnnlib", "(declare-const X_0 Real)\n(assert (<= X_0 (* X_0 X_0)))\n"))
        assert "line 2" in str(e.value)


def test_a_raising_progress_callback_cancels_and_reraises():
    with tempfile.TemporaryDirectory() as d, vram.Context(os.urandom(32), backend="host") as ctx:
        net = ctx.network_from_nnet(write(d, "n.nnet", NNET))
        # y >= 1.5 is reached only at one corner: the search runs several rounds.
        spec = vram.Spec.from_vnnlib(write(d, "t.vnnlib", BOX + "(assert (>= Y_0 1.50001))\n"))

        def boom(boxes, proven):
            raise KeyError("from the callback")

        try:
            r = net.certify(spec, timeout=30, progress=boom)
            assert r.kind == "holds"  # proven before any round ended: no callback ran
        except KeyError:
            pass


def test_certify_an_acas_xu_instance():
    data = os.environ.get("VRAM_ACASXU_DIR",
                          os.path.join(os.path.dirname(__file__), "../../../shared/data/acasxu"))
    if not os.path.isdir(os.path.join(data, "onnx")):
        pytest.skip("../shared/data/acasxu not found (set VRAM_ACASXU_DIR)")
    v = vram.certify(os.path.join(data, "onnx/ACASXU_experimental_v2a_1_1.onnx"),
                     os.path.join(data, "vnnlib/prop_1.vnnlib"), timeout=60)
    assert v.kind == "holds"


def test_certify_an_acas_xu_instance_on_the_gpu():
    data = os.environ.get("VRAM_ACASXU_DIR",
                          os.path.join(os.path.dirname(__file__), "../../../shared/data/acasxu"))
    if not os.path.isdir(os.path.join(data, "onnx")):
        pytest.skip("../shared/data/acasxu not found (set VRAM_ACASXU_DIR)")
    try:
        vram.Context(os.urandom(32), backend="cuda").close()
    except vram.Error as e:
        pytest.skip(f"no usable GPU: {e}")
    net = os.path.join(data, "onnx/ACASXU_experimental_v2a_1_1.onnx")
    v = vram.certify(net, os.path.join(data, "vnnlib/prop_1.vnnlib"), timeout=60, backend="cuda")
    assert v.kind == "holds"
    v = vram.certify(os.path.join(data, "onnx/ACASXU_experimental_v2a_2_1.onnx"),
                     os.path.join(data, "vnnlib/prop_2.vnnlib"), timeout=60, backend="cuda")
    assert v.kind == "violated" and len(v.counterexample) == 5


def test_linear_bounds_are_never_wider_than_interval_ones():
    import numpy as np

    with tempfile.TemporaryDirectory() as d, vram.Context(os.urandom(32), backend="host") as ctx:
        net = ctx.network_from_nnet(write(d, "n.nnet", NNET))
        lo, hi = np.array([[0.0, 0.0]]), np.array([[1.0, 1.0]])
        il, ih = net.propagate(lo, hi)
        ll, lh = net.propagate(lo, hi, method="linear")
        assert (ll >= il).all() and (lh <= ih).all() and ll[0, 0] <= -0.5 and lh[0, 0] >= 1.5
        bl, bh = net.propagate(lo, hi, method="linear_both")
        assert (bl >= ll).all() and (bh <= lh).all() and bl[0, 0] <= -0.5 and bh[0, 0] >= 1.5
        gl, gh = net.propagate(lo, hi, method="linear_guarded")
        assert (gl >= ll).all() and (gh <= lh).all() and gl[0, 0] <= -0.5 and gh[0, 0] >= 1.5
        with pytest.raises(ValueError):
            net.propagate(lo, hi, method="crown")
