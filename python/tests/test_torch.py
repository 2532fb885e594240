"""torch tensors and modules: CPU ones copied into the backend, CUDA ones sealed in place, and a
bit flipped through torch caught. Skipped, with the reason, where torch (or its GPU) is missing."""

import pytest

import vram

KEY = b"an example seal secret, 32 bytes"

torch = pytest.importorskip("torch", reason="torch is not installed here (the test command installs it unless VRAM_TEST_TORCH=0)")


def test_torch_cpu_tensors_and_modules():
    ctx = vram.Context(key=KEY)
    t = torch.arange(1000, dtype=torch.bfloat16)
    s = ctx.seal("t", t)
    assert s.size == 2000 and ctx.verify(s).intact
    with pytest.raises(ValueError, match="contiguous"):
        ctx.seal("tt", torch.ones(4, 4).t())
    module = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32))
    sealed = vram.seal_module(ctx, module, prefix="m.")
    assert set(sealed.shards) >= {"m.0.weight", "m.0.bias", "m.1.running_mean"}
    assert sealed.damaged() == []


def test_a_cuda_module_is_sealed_in_place_and_a_torch_bit_flip_is_caught():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device for torch on this machine")
    with vram.Context(key=KEY, backend="cuda") as gpu:
        module = torch.nn.Linear(1024, 1024).cuda()
        sealed = vram.seal_module(gpu, module)
        w = sealed.shards["weight"]
        assert w.data_ptr == module.weight.data_ptr(), "sealed in place, not copied"
        assert sealed.damaged() == []
        original = module.weight.detach().cpu().numpy().copy()
        with torch.no_grad():
            module.weight.view(torch.int32).view(-1)[300_000] ^= 1 << 7
        assert sealed.damaged() == ["weight"]
        # Repaired in place from the sealed bytes: the parameter's own memory is rewritten.
        gpu.restore(w, original)
        assert sealed.damaged() == [] and w.data_ptr == module.weight.data_ptr()
        with pytest.raises(ValueError, match="contiguous"):
            gpu.seal("t", module.weight.t())


def _acasxu_onnx() -> str:
    """ACAS Xu 1_1's ONNX file, for tests that need a GPU (skipped without one, or without the
    data)."""
    import os

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device for torch on this machine")
    data = os.environ.get("VRAM_ACASXU_DIR",
                          os.path.join(os.path.dirname(__file__), "../../../shared/data/acasxu"))
    if not os.path.isdir(os.path.join(data, "onnx")):
        pytest.skip("../shared/data/acasxu not found (set VRAM_ACASXU_DIR)")
    return os.path.join(data, "onnx/ACASXU_experimental_v2a_1_1.onnx")


def test_cuda_boxes_stay_on_the_gpu_and_get_the_host_boxes_bounds():
    """propagate() with CUDA tensors on a CUDA-backed network's GPU: the bounds come back as
    CUDA tensors, equal (to the last f32 step of the narrowing) to those of the same boxes
    passed as NumPy arrays, for both methods; float64 tensors are rounded outward first."""
    import numpy as np

    onnx = _acasxu_onnx()
    with vram.Context(key=KEY, backend="cuda") as gpu:
        net = gpu.network_from_onnx(onnx)
        g = torch.Generator().manual_seed(5)
        centre = torch.rand((3000, 5), generator=g, dtype=torch.float64) * 0.8 - 0.4
        lo64, hi64 = (centre - 0.01).cuda(), (centre + 0.01).cuda()
        for method in ("interval", "linear", "linear_both", "linear_guarded"):
            dl, dh = net.propagate(lo64, hi64, method=method)
            assert dl.is_cuda and dl.dtype == torch.float32 and dl.shape == (3000, 5)
            hl, hh = net.propagate(lo64.cpu().numpy(), hi64.cpu().numpy(), method=method)
            tol = 1e-6 * (1 + np.abs(hl))
            assert np.all(np.abs(dl.cpu().numpy() - hl) <= tol), method
            assert np.all(np.abs(dh.cpu().numpy() - hh) <= 1e-6 * (1 + np.abs(hh))), method
            assert (dl <= dh).all()
        il, ih = net.propagate(lo64, hi64)
        ll, lh = net.propagate(lo64, hi64, method="linear")
        assert (ll >= il).all() and (lh <= ih).all() and ((lh - ll) < (ih - il)).all()
        bl, bh = net.propagate(lo64, hi64, method="linear_both")
        assert (bl >= ll).all() and (bh <= lh).all()
        gl, gh = net.propagate(lo64, hi64, method="linear_guarded")
        assert (gl >= ll).all() and (gh <= lh).all()
        one_lo, one_hi = net.propagate(lo64[0], hi64[0], method="linear")
        assert one_lo.shape == (5,) and one_lo.is_cuda
        assert torch.allclose(one_lo, ll[0], rtol=1e-6, atol=1e-6) and torch.allclose(one_hi, lh[0], rtol=1e-6, atol=1e-6)
        bad = lo64.clone()
        bad[7, 2] = float("nan")
        with pytest.raises(ValueError):
            net.propagate(bad, hi64, method="linear")


def test_cuda_boxes_written_just_before_the_call_are_the_ones_bounded():
    """Boxes written on torch's default stream (handle 0, the legacy default stream) by work
    still queued behind a long kernel: propagate() runs on that stream, after the writes. (It
    once passed handle 0 as NULL, which libvram reads as a stream of its own: the boxes were
    read before they were written, and the bounds were those of zeros.)"""
    onnx = _acasxu_onnx()
    with vram.Context(key=KEY, backend="cuda") as gpu:
        net = gpu.network_from_onnx(onnx)
        g = torch.Generator().manual_seed(9)
        centre = (torch.rand((2000, 5), generator=g) * 0.8 - 0.4).cuda()
        lo, hi = centre - 0.01, centre + 0.01
        assert torch.cuda.current_stream().cuda_stream == 0
        for method in ("interval", "linear", "linear_guarded"):
            want = net.propagate(lo, hi, method=method)
            x, y = torch.zeros_like(lo), torch.zeros_like(hi)
            torch.cuda.synchronize()
            torch.cuda._sleep(200_000_000)  # about 0.1 s of GPU time, queued first
            x.copy_(lo)
            y.copy_(hi)
            got = net.propagate(x, y, method=method)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), method
