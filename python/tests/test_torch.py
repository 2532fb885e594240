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
