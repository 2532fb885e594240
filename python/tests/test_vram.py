"""The Python package against libvram: sealing host buffers and torch tensors, verifying,
records, errors, safetensors models and manifests, certified bounds with sound float32
conversion, the log callback. GPU-only cases skip with their reason on CPU machines."""

import json
import struct

import numpy as np
import pytest

import vram

KEY = b"an example seal secret, 32 bytes"
OTHER = b"another seal secret of 32 bytes!"


@pytest.fixture
def ctx():
    with vram.Context(key=KEY, allow_fault_drills=True) as c:
        yield c


def test_build_info_says_what_was_compiled_and_found():
    info = vram.build_info()
    assert info["version"] == vram.version()
    assert (info["gpu_count"] == 0) == bool(info["no_gpu_reason"]), info
    if info["cuda_compiled"]:
        assert "sm_90" in info["cuda_architectures"]


def test_every_buffer_kind_seals_and_verifies(ctx):
    arr = np.arange(300_000, dtype=np.float32)
    for name, data in [("np", arr), ("bytes", arr.tobytes()), ("bytearray", bytearray(arr.tobytes())),
                       ("readonly", memoryview(arr.tobytes())), ("2d", arr.reshape(600, 500))]:
        shard = ctx.seal(name, data)
        assert shard.size == arr.nbytes
        assert ctx.verify(shard).intact, name
    # Every kind hashes the same bytes to the same root.
    roots = {ctx.seal(f"again.{i}", d).root for i, d in enumerate([arr, arr.tobytes()])}
    assert len(roots) == 1
    with pytest.raises(ValueError, match="contiguous"):
        ctx.seal("strided", arr[::2])
    with pytest.raises(TypeError, match="no buffer"):
        ctx.seal("object", object())


def test_a_flipped_bit_is_located(ctx):
    shard = ctx.seal("w", np.ones(3 << 18, np.float32))  # 3 MiB
    shard.debug_flip_bit(8 * (2 << 20) + 3)
    r = ctx.verify(shard)
    assert not r.intact and r.first_damaged_offset == 2 << 20 and r.damaged_regions == 1
    shard.debug_flip_bit(7)
    assert ctx.damaged_regions(shard) == [0, 2 << 20]
    good = np.ones(3 << 18, np.float32)
    with pytest.raises(vram.Error) as e:
        ctx.restore(shard, np.zeros(3 << 18, np.float32))
    assert e.value.status == 6 and ctx.damaged_regions(shard) == [0, 2 << 20]
    before = shard.data_ptr
    ctx.restore(shard, good)
    assert ctx.verify(shard).intact and shard.data_ptr == before
    shard.debug_flip_bit(1)
    many = ctx.verify_many([shard, ctx.seal("ok", b"fine bytes")])
    assert [m.intact for m in many] == [False, True]
    ticket = ctx.verify_many_async([shard, ctx.seal("ok2", b"fine")])
    results = ticket.wait()
    assert ticket.done() and [r.intact for r in results] == [False, True]


def test_scrubber_reports_damage_once_and_restore_clears_it(ctx):
    import threading
    import time

    good = np.arange(3 << 18, dtype=np.float32)  # 3 MiB: three regions
    shard = ctx.seal("layers.1.weight", good)
    other = ctx.seal("layers.2.weight", b"other bytes" * 1000)
    seen, lock = [], threading.Lock()

    def on_damage(name, offsets):
        with lock:
            seen.append((name, offsets))

    with ctx.scrubber([shard], on_damage=on_damage, max_threads=2, pass_period=0.002,
                      max_bytes_per_second=50e9) as s:
        s.add(other)
        with pytest.raises(vram.Error) as e:
            s.add(other)
        assert e.value.status == 2
        shard.debug_flip_bit(8 * (2 << 20) + 9)
        deadline = time.monotonic() + 30
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen == [("layers.1.weight", [2 << 20])]
        ctx.restore(shard, good)
        passes = s.stats()["passes"]
        while s.stats()["passes"] < passes + 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        st = s.stats()
        assert st["damage_reports"] == 1 and st["errors"] == 0 and st["shards"] == 2 and st["budget"] >= 1
        s.pause()
        assert s.stats()["paused"]
        s.resume()
        s.remove(other)
        assert s.stats()["shards"] == 1
    assert len(seen) == 1
    with pytest.raises(ValueError, match="pass_period"):
        ctx.scrubber([shard], pass_period=-1)
    # A damaged shard is refused: nothing starts.
    shard.debug_flip_bit(5)
    with pytest.raises(vram.Error) as e:
        ctx.scrubber([shard])
    assert e.value.status == 6


def test_records_open_in_another_context_and_forgeries_do_not(ctx):
    data = np.random.default_rng(1).integers(0, 255, 100_000, dtype=np.uint8)
    shard = ctx.seal("layers.0.weight", data)
    record = shard.record()
    with vram.Context(key=KEY, backend="host") as later:
        info = later.record_open(record)
        assert info.shard_id == "layers.0.weight" and info.byte_len == data.nbytes
        assert info.root == shard.root and info.backend == ctx.backend
        again = later.seal("layers.0.weight", data)
        later.record_verify(record, again)
        other = later.seal("other", data[:-1])
        with pytest.raises(vram.Error) as e:
            later.record_verify(record, other)
        assert e.value.status == 6  # authentic, but other bytes
    altered = bytearray(record)
    altered[len(altered) // 2] ^= 1
    with pytest.raises(vram.Error) as e:
        ctx.record_open(bytes(altered))
    assert e.value.status == 7 and e.value.name == "VRAM_ERR_BAD_SEAL"
    with vram.Context(key=OTHER) as stranger, pytest.raises(vram.Error) as e:
        stranger.record_open(record)
    assert e.value.status == 7


def test_errors_carry_status_and_message(ctx):
    with pytest.raises(vram.Error) as e:
        vram.Context(key=b"short")
    assert e.value.status == 2 and "key" in str(e.value)
    with pytest.raises(vram.Error) as e:
        ctx.seal_expect("x", b"some bytes", bytes(32))
    assert e.value.status == 6
    assert ctx.usage()[0] == 0
    with pytest.raises(ValueError):
        vram.Context(key=KEY, backend="tpu")


def _safetensors(tensors):
    header, blob, off = {}, b"", 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
        blob += data
        off += len(data)
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + blob


def test_a_safetensors_model_loads_with_its_manifest(ctx, tmp_path):
    w = np.arange(1 << 19, dtype=np.float32)
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(_safetensors([("w", "F32", [1 << 19], w.tobytes()), ("e", "U8", [0], b"")]))
    seen = []
    model = ctx.load_safetensors(path, progress=lambda d, t: seen.append((d, t)))
    assert [t.name for t in model.tensors] == ["w", "e"]
    assert model.tensors[0].shape == (1 << 19,) and seen[-1] == (w.nbytes, w.nbytes)
    assert all(r.intact for r in model.verify().values())
    published = model.manifest().export()
    model.close()
    expected = ctx.import_manifest(published)
    assert expected.model_name == "tiny" and expected.tensors[0].byte_len == w.nbytes
    bad = bytearray(path.read_bytes())
    bad[-5] ^= 1
    path.write_bytes(bytes(bad))
    with pytest.raises(vram.Error) as e:
        ctx.load_safetensors(path, expected=expected)
    assert e.value.status == 6 and "'w'" in e.value.message
    with pytest.raises(vram.Error) as e:
        ctx.load_safetensors(path, progress=lambda d, t: False)
    assert e.value.status == 12
    assert ctx.usage()[0] == 0


NNET = "1,2,1,2,\n2,1,\n0,\n-10,-10,\n10,10,\n0,0,0,\n1,1,1,\n1,-1,\n0.5,\n"


def test_bounds_enforce_float32_soundly(ctx, tmp_path):
    p = tmp_path / "n.nnet"
    p.write_text(NNET)
    net = ctx.network_from_nnet(p)
    assert (net.input_size, net.output_size) == (2, 1)
    lo, hi = net.propagate(np.array([0.0, 0.0], np.float32), np.array([1.0, 2.0], np.float32))
    assert lo[0] <= -1.5 and hi[0] >= 1.5 - 2.0 + 0.5  # x - y + 0.5 over the box
    # float64 bounds that float32 cannot hold: rounded outward, so the box only grows.
    a = np.array([[0.1, 0.2]], np.float64)
    b = np.array([[0.3, 0.7]], np.float64)
    lo, hi = net.propagate(a, b)
    exact_lo, exact_hi = 0.1 - 0.7 + 0.5, 0.3 - 0.2 + 0.5
    assert lo[0, 0] <= exact_lo and hi[0, 0] >= exact_hi
    with pytest.raises(ValueError):
        net.propagate(np.zeros(3, np.float32), np.zeros(3, np.float32))
    with pytest.raises(ValueError):
        net.propagate(np.array([np.nan, 0.0]), np.zeros(2))


def test_the_log_callback_sees_events(ctx):
    events = []
    vram.set_log_callback(lambda level, target, msg: events.append(target), 4)
    ctx.verify(ctx.seal("logged", b"bytes"))
    vram.set_log_callback(None)
    assert "vram.seal" in events


