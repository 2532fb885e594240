"""libvram for Python: seal tensors where they live, verify them, certify bounds.

A thin layer over the same ``libvram.so`` the C and C++ APIs use (ctypes; no second native
build). Every libvram error is raised as :class:`vram.Error` with ``.status`` and the message.

>>> import vram, numpy as np
>>> with vram.Context(key=b"an example seal secret, 32 bytes") as ctx:
...     shard = ctx.seal("w", np.ones(1024, dtype=np.float32))
...     assert ctx.verify(shard).intact
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from . import _lib

__all__ = [
    "Error", "Context", "Shard", "Model", "Manifest", "Network", "VerifyResult", "RecordInfo",
    "SealedModule", "Scrubber", "Ticket", "Spec", "Verdict", "certify", "seal_module", "build_info",
    "set_log_callback", "version",
]

_C = _lib.load()
_OK, _INTEGRITY, _TOO_SMALL = 0, 6, 10
_BACKENDS = {"auto": 0, "cuda": 1, "host": 2}
_ALLOW_FAULT_DRILLS = 1
_REGION_ROOTS = 1


class Error(Exception):
    """A libvram error: ``status`` (the vram_status number), ``name`` and the message."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.name = (_C.vram_status_str(status) or b"").decode().split(":")[0]
        self.message = message
        super().__init__(f"{self.name}: {message}" if message else self.name)


def _last_error() -> str:
    n = _C.vram_last_error_message(None, 0)
    buf = ctypes.create_string_buffer(n + 1)
    _C.vram_last_error_message(buf, n + 1)
    return buf.value.decode("utf-8", "replace")


def _check(status: int) -> None:
    if status != _OK:
        raise Error(status, _last_error())


def _u8(data: bytes) -> Any:
    return ctypes.cast(ctypes.c_char_p(data), _lib.c_u8p)


def _read_sized(fn: Callable, handle: Any) -> bytes:
    """The bytes of a two-call size query ``fn(handle, buf, len, &out_len)``."""
    n = ctypes.c_size_t(0)
    s = fn(handle, None, 0, ctypes.byref(n))
    if s not in (_OK, _TOO_SMALL):
        _check(s)
    buf = (ctypes.c_uint8 * n.value)()
    _check(fn(handle, buf, n.value, ctypes.byref(n)))
    return bytes(buf[: n.value])


def version() -> str:
    """The library's version."""
    return _C.vram_version().decode()


def build_info() -> dict:
    """What libvram was built with and what it finds now: CUDA compiled in, architectures,
    runtime and driver versions, usable GPUs and why none."""
    d = _lib.BuildDetails(struct_size=ctypes.sizeof(_lib.BuildDetails))
    _check(_C.vram_build_info(ctypes.byref(d)))
    return {
        "version": d.version.decode(),
        "cuda_compiled": bool(d.cuda_compiled),
        "cuda_architectures": d.cuda_architectures.decode(),
        "cuda_runtime_version": d.cuda_runtime_version,
        "cuda_driver_version": d.cuda_driver_version,
        "gpu_count": d.gpu_count,
        "no_gpu_reason": d.no_gpu_reason.decode(),
    }


_log_lock = threading.Lock()
_log_keep: Any = None


def set_log_callback(fn: Callable[[int, str, str], None] | None, max_level: int = 3) -> None:
    """Sends libvram's events (level 1 = error … 5 = trace, target, message) to ``fn``; ``None``
    stops them. Exceptions raised by ``fn`` are printed and dropped (never cross into C)."""
    global _log_keep
    with _log_lock:
        if fn is None:
            _C.vram_set_log_callback(_lib.LOG(), None, 0)
            _log_keep = None
            return

        def trampoline(_userdata, level, target, message):
            try:
                fn(level, target.decode("utf-8", "replace"), message.decode("utf-8", "replace"))
            except Exception:  # noqa: BLE001 - a log function must not break libvram's caller
                import traceback

                traceback.print_exc()

        keep = _lib.LOG(trampoline)
        _C.vram_set_log_callback(keep, None, max_level)
        _log_keep = keep  # the previous one is no longer called once the call above returned


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "data_ptr")


def _host_bytes(data: Any) -> tuple[Any, int, Any]:
    """(pointer argument, length, keep-alive) for host memory: anything with the buffer
    protocol, or a CPU torch tensor. Non-contiguous data is refused, not copied silently."""
    if _is_torch(data):
        if data.is_cuda:
            raise ValueError("a CUDA tensor: seal it with ctx.seal (in place) on a CUDA context")
        if not data.is_contiguous():
            raise ValueError("the tensor is not contiguous: call .contiguous() first")
        n = data.numel() * data.element_size()
        return ctypes.c_void_p(data.data_ptr()), n, data
    if isinstance(data, bytes):
        return data, len(data), data
    try:
        mv = memoryview(data)
    except TypeError:
        raise TypeError(f"cannot seal a {type(data).__name__}: it has no buffer (bytes, bytearray, "
                        "numpy arrays, torch tensors do)") from None
    if not mv.c_contiguous:
        raise ValueError("the buffer is not C-contiguous (numpy: np.ascontiguousarray first)")
    flat = mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv
    if flat.readonly:
        return bytes(flat), flat.nbytes, None  # read-only and not bytes: one copy
    arr = (ctypes.c_char * flat.nbytes).from_buffer(flat)
    return ctypes.cast(arr, ctypes.c_void_p), flat.nbytes, (arr, flat)


@dataclass(frozen=True)
class VerifyResult:
    """What a verify found. ``intact`` False: the bytes changed; the first damaged region
    starts at ``first_damaged_offset``."""

    intact: bool
    damaged_regions: int
    total_regions: int
    region_size: int
    first_damaged_offset: int | None


@dataclass(frozen=True)
class RecordInfo:
    """The fields of an authentic seal record."""

    shard_id: str
    byte_len: int
    leaf_size: int
    root: bytes
    backend: str
    device: int
    seal_time_unix_ns: int
    key_id: bytes


def _verify_result(r: _lib.VerifyReport, status: int) -> VerifyResult:
    return VerifyResult(
        intact=status == _OK,
        damaged_regions=r.damaged_regions,
        total_regions=r.total_regions,
        region_size=r.region_size,
        first_damaged_offset=None if status == _OK else r.first_damaged_offset,
    )


class _Handle:
    _free: Callable[[Any], None]

    def __init__(self, handle: int):
        self._h = ctypes.c_void_p(handle)

    def close(self) -> None:
        """Frees the handle now (also done when the object is collected)."""
        if self._h:
            type(self)._free(self._h)
            self._h = ctypes.c_void_p()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _live(self) -> ctypes.c_void_p:
        if not self._h:
            raise ValueError(f"this {type(self).__name__} was closed")
        return self._h


class Shard(_Handle):
    """A sealed shard. For a CUDA tensor sealed in place it keeps the tensor alive."""

    _free = staticmethod(lambda h: _C.vram_shard_free(h))

    def __init__(self, handle: int, name: str, keep: Any = None):
        super().__init__(handle)
        self.name = name
        self._keep = keep

    @property
    def size(self) -> int:
        return _C.vram_shard_len(self._live())

    @property
    def root(self) -> bytes:
        out = (ctypes.c_uint8 * 32)()
        _check(_C.vram_shard_root(self._live(), out))
        return bytes(out)

    @property
    def data_ptr(self) -> int:
        """Address of the sealed bytes (device memory on the CUDA backend)."""
        return _C.vram_shard_device_ptr(self._live()) or 0

    def record(self) -> bytes:
        """The seal record: store it; a later process opens it under the same key."""
        return _read_sized(_C.vram_shard_record, self._live())

    def debug_flip_bit(self, bit: int) -> None:
        """Fault drill (contexts opened with allow_fault_drills=True only)."""
        _check(_C.vram_debug_flip_bit(self._live(), bit))

    def __repr__(self) -> str:
        return f"vram.Shard({self.name!r}, {self.size} bytes)" if self._h else "vram.Shard(closed)"


class Ticket(_Handle):
    """A verify in flight (:meth:`Context.verify_many_async`); holds its shards alive."""

    _free = staticmethod(lambda h: _C.vram_verify_ticket_free(h))

    def __init__(self, handle: int, n: int):
        super().__init__(handle)
        self._n = n

    def done(self) -> bool:
        """Whether :meth:`wait` would return at once (never blocks)."""
        flag = ctypes.c_int(0)
        _check(_C.vram_verify_ticket_query(self._live(), ctypes.byref(flag)))
        return bool(flag.value)

    def wait(self) -> list[VerifyResult]:
        """Waits for this verify only; one result per shard."""
        reports = (_lib.VerifyReport * max(self._n, 1))()
        s = _C.vram_verify_ticket_wait(self._live(), reports)
        if s not in (_OK, _INTEGRITY, 7):
            _check(s)
        return [_verify_result(r, r.status) for r in reports[: self._n]]


class Scrubber(_Handle):
    """A background scrubber (:meth:`Context.scrubber`): sweeps its shards on a thread of its
    own until closed; damage its SHA-256 check confirms goes to ``on_damage(shard_name,
    region_offsets)``, called on that thread (exceptions it raises are printed and dropped)."""

    _free = staticmethod(lambda h: _C.vram_scrubber_free(h))

    def __init__(self, handle: int, keep: Any, shards: Sequence["Shard"]):
        super().__init__(handle)
        self._keep = keep  # the C callback: freed only after the scrubber (see close)
        self._shards = {id(s): s for s in shards}

    def close(self) -> None:
        """Stops the scrubber and joins its thread (then its callback may go)."""
        super().close()
        self._keep = None

    def add(self, shard: "Shard") -> None:
        """Scrubs ``shard`` too (verified against its seal first)."""
        _check(_C.vram_scrubber_add(self._live(), shard._live()))
        self._shards[id(shard)] = shard

    def remove(self, shard: "Shard") -> None:
        _check(_C.vram_scrubber_remove(self._live(), shard._live()))
        self._shards.pop(id(shard), None)

    def pause(self) -> None:
        """Returns once none of the scrubber's work is on the device."""
        _check(_C.vram_scrubber_pause(self._live()))

    def resume(self) -> None:
        _check(_C.vram_scrubber_resume(self._live()))

    def stats(self) -> dict:
        """Passes, last pass duration (s), bytes per pass and per second, budget (SMs or
        threads), shards, damage reports and regions, stale digests, errors, paused."""
        st = _lib.ScrubStats()
        st.struct_size = ctypes.sizeof(st)
        _check(_C.vram_scrubber_stats(self._live(), ctypes.byref(st)))
        return {
            "passes": st.passes,
            "last_pass_s": st.last_pass_ns / 1e9,
            "bytes_per_pass": st.bytes_per_pass,
            "bytes_per_second": st.bytes_per_second,
            "budget": st.budget,
            "shards": st.shards,
            "damage_reports": st.damage_reports,
            "damaged_regions": st.damaged_regions,
            "stale_digests": st.stale_digests,
            "errors": st.errors,
            "last_error": st.last_error,
            "paused": bool(st.paused),
        }


@dataclass(frozen=True)
class ManifestTensor:
    name: str
    dtype: str
    shape: tuple
    byte_len: int
    root: bytes


class Manifest(_Handle):
    """A model manifest: every tensor's name, dtype, shape, length and Merkle root, one MAC."""

    _free = staticmethod(lambda h: _C.vram_manifest_free(h))

    @property
    def model_name(self) -> str:
        return (_C.vram_manifest_model(self._live()) or b"").decode()

    @property
    def tensors(self) -> list[ManifestTensor]:
        out = []
        for i in range(_C.vram_manifest_tensor_count(self._live())):
            t = _lib.ManifestTensorInfo(struct_size=ctypes.sizeof(_lib.ManifestTensorInfo))
            _check(_C.vram_manifest_tensor(self._live(), i, ctypes.byref(t)))
            out.append(ManifestTensor(t.name.decode(), t.dtype.decode(),
                                      tuple(t.shape[k] for k in range(t.rank)), t.byte_len,
                                      bytes(t.root)))
        return out

    def export(self) -> bytes:
        """The canonical bytes with their MAC (docs/manifest-format.md)."""
        return _read_sized(_C.vram_manifest_export, self._live())


@dataclass(frozen=True)
class ModelTensor:
    name: str
    dtype: str
    shape: tuple
    byte_len: int
    data_ptr: int


class Model(_Handle):
    """A model loaded and sealed from safetensors files; owns its tensors' shards."""

    _free = staticmethod(lambda h: _C.vram_model_free(h))

    def __init__(self, handle: int, ctx: "Context"):
        super().__init__(handle)
        self._ctx = ctx

    @property
    def tensors(self) -> list[ModelTensor]:
        out = []
        for i in range(_C.vram_model_tensor_count(self._live())):
            t = _lib.ModelTensorInfo(struct_size=ctypes.sizeof(_lib.ModelTensorInfo))
            _check(_C.vram_model_tensor(self._live(), i, ctypes.byref(t)))
            out.append(ModelTensor(t.name.decode(), t.dtype.decode(),
                                   tuple(t.shape[k] for k in range(t.rank)), t.byte_len,
                                   t.data or 0))
        return out

    def manifest(self) -> Manifest:
        out = ctypes.c_void_p()
        _check(_C.vram_model_manifest(self._ctx._live(), self._live(), ctypes.byref(out)))
        return Manifest(out.value)

    def verify(self) -> dict[str, VerifyResult]:
        """Re-hashes every tensor where it lives; the damaged ones have ``intact`` False."""
        tensors = self.tensors
        reports = (_lib.TensorReport * max(len(tensors), 1))()
        summary = _lib.ManifestSummary(struct_size=ctypes.sizeof(_lib.ManifestSummary))
        s = _C.vram_model_verify(self._ctx._live(), self._live(), reports, ctypes.byref(summary))
        if s not in (_OK, _INTEGRITY):
            _check(s)
        out = {}
        for t, r in zip(tensors, reports):
            ok = r.status == _OK
            out[t.name] = VerifyResult(ok, r.damaged_regions, -(-t.byte_len // (1 << 20)),
                                       1 << 20, None if ok else r.first_damaged_offset)
        return out


class Network(_Handle):
    """A network whose weights are sealed shards; bounds guaranteed to enclose the exact ones."""

    _free = staticmethod(lambda h: _C.ibp_model_free(h))

    def __init__(self, handle: int, ctx: Optional["Context"] = None):
        super().__init__(handle)
        # Where the weights live: CUDA tensors on that GPU stay there (propagate).
        self._gpu = ctx.device if ctx is not None and ctx.backend == "cuda" else None

    @property
    def input_size(self) -> int:
        return _C.ibp_model_input_size(self._live())

    @property
    def output_size(self) -> int:
        return _C.ibp_model_output_size(self._live())

    def propagate(self, lower: Any, upper: Any, method: str = "interval") -> tuple[Any, Any]:
        """Output bounds for input boxes ``[lower, upper]`` (NumPy arrays or torch tensors of
        shape (batch, input_size) or (input_size,)); returns float32 NumPy arrays.
        ``method="linear"``: sound linear (CROWN-style) bounds, never wider than the interval
        ones (on the CPU for a host-backed network; on the GPU for a CUDA-backed one whose graph
        is a chain of linear layers with ReLU). ``method="linear_both"``: those and textbook
        CROWN's (auto_LiRPA's), the tighter of the two on each output: never wider than either,
        at the cost of both. ``method="linear_guarded"``: ``"linear"``, and where its
        intersection with the interval bounds changed a bound, a second pass without it; never
        wider than ``"linear"`` (``IBP_METHOD_LINEAR_GUARDED``).

        libvram computes in float32. Float64 (or other) inputs are converted soundly — lower
        bounds rounded down, upper bounds up, so the float32 box contains the given one — never
        passed as raw bytes. CUDA tensors on the GPU of a CUDA-backed network stay there: the
        bounds come back as float32 CUDA tensors on that device, computed on its current
        stream (the call waits for them). Other device tensors are copied to the host first."""
        _method(method)
        on_gpu = [_is_torch(x) and x.is_cuda and x.device.index == self._gpu for x in (lower, upper)]
        if self._gpu is not None and all(on_gpu):
            return self._propagate_cuda(lower, upper, method)
        import numpy as np

        lo, hi = _outward_f32(lower, np.floor), _outward_f32(upper, np.ceil)
        if lo.shape != hi.shape:
            raise ValueError(f"lower {lo.shape} and upper {hi.shape} differ in shape")
        single = lo.ndim == 1
        lo2, hi2 = np.atleast_2d(lo), np.atleast_2d(hi)
        if lo2.ndim != 2 or lo2.shape[1] != self.input_size:
            raise ValueError(f"inputs must be (batch, {self.input_size}); got {lo.shape}")
        batch = lo2.shape[0]
        olo = np.empty((batch, self.output_size), np.float32)
        ohi = np.empty_like(olo)
        fp = ctypes.POINTER(ctypes.c_float)
        opts = _lib.PropagateOptions()
        opts.struct_size = ctypes.sizeof(_lib.PropagateOptions)
        opts.method = _method(method)
        _check(_C.ibp_propagate_ex(self._live(), batch, lo2.ctypes.data_as(fp), hi2.ctypes.data_as(fp),
                                   olo.ctypes.data_as(fp), ohi.ctypes.data_as(fp), ctypes.byref(opts)))
        return (olo[0], ohi[0]) if single else (olo, ohi)

    def _propagate_cuda(self, lower: Any, upper: Any, method: str) -> tuple[Any, Any]:
        """propagate() for CUDA tensors on this network's GPU: ibp_propagate_ex with the boxes,
        and the bounds, in device memory."""
        import torch

        lo, hi = _outward_f32_torch(lower, down=True), _outward_f32_torch(upper, down=False)
        if lo.shape != hi.shape:
            raise ValueError(f"lower {tuple(lo.shape)} and upper {tuple(hi.shape)} differ in shape")
        single = lo.dim() == 1
        lo2, hi2 = lo.reshape(1, -1) if single else lo, hi.reshape(1, -1) if single else hi
        if lo2.dim() != 2 or lo2.shape[1] != self.input_size:
            raise ValueError(f"inputs must be (batch, {self.input_size}); got {tuple(lo.shape)}")
        batch = lo2.shape[0]
        olo = torch.empty((batch, self.output_size), dtype=torch.float32, device=lo2.device)
        ohi = torch.empty_like(olo)
        opts = _lib.PropagateOptions()
        opts.struct_size = ctypes.sizeof(_lib.PropagateOptions)
        opts.memory = 1  # IBP_MEMORY_DEVICE
        opts.stream = _stream_handle(torch.cuda.current_stream(lo2.device).cuda_stream)
        opts.method = _method(method)

        def ptr(t: Any) -> Any:
            return ctypes.cast(ctypes.c_void_p(t.data_ptr()), ctypes.POINTER(ctypes.c_float))

        _check(_C.ibp_propagate_ex(self._live(), batch, ptr(lo2), ptr(hi2), ptr(olo), ptr(ohi),
                                   ctypes.byref(opts)))
        return (olo[0], ohi[0]) if single else (olo, ohi)

    def certify(self, spec: "Spec", timeout: float = 300.0, seed: int = 0,
                progress: Optional[Callable[[int, float], bool]] = None) -> "Verdict":
        """Decides a VNN-LIB property over this network (``ibp_certify``): ``holds``,
        ``violated`` (with a counterexample confirmed by sound bounds) or ``unknown`` at the time
        limit. ``progress(boxes, proven_fraction)`` may return False to cancel (raises Error
        with VRAM_ERR_CANCELLED). Weights are verified before and after: a weight changed
        since sealing raises Error (VRAM_ERR_INTEGRITY), never a verdict."""
        n_in, n_out = self.input_size, self.output_size
        x = (ctypes.c_double * n_in)()
        lo, hi = (ctypes.c_double * n_out)(), (ctypes.c_double * n_out)()
        errors: list = []

        def on_progress(_userdata: Any, boxes: int, proven: float) -> int:
            try:
                return 0 if progress is None or progress(boxes, proven) is not False else 1
            except BaseException as e:  # never let an exception cross the C boundary
                errors.append(e)
                return 1

        cb = _lib.CERTIFY_PROGRESS(on_progress)
        opts = _lib.CertifyOptions(ctypes.sizeof(_lib.CertifyOptions), 0, float(timeout), int(seed),
                                   cb, None)
        r = _lib.CertifyResult()
        r.struct_size = ctypes.sizeof(_lib.CertifyResult)
        r.counterexample = ctypes.cast(x, ctypes.POINTER(ctypes.c_double))
        r.counterexample_out_lower = ctypes.cast(lo, ctypes.POINTER(ctypes.c_double))
        r.counterexample_out_upper = ctypes.cast(hi, ctypes.POINTER(ctypes.c_double))
        status = _C.ibp_certify(self._live(), spec._live(), ctypes.byref(opts), ctypes.byref(r))
        if errors:
            raise errors[0]
        _check(status)
        kind = {1: "holds", 2: "violated"}.get(r.verdict, "unknown")
        violated = kind == "violated"
        return Verdict(
            kind=kind,
            boxes=r.boxes,
            proven_fraction=r.proven_fraction,
            seconds=r.seconds,
            weights_root=bytes(r.weights_root),
            case_index=r.case_index if violated else None,
            counterexample=list(x) if violated else None,
            out_lower=list(lo) if violated else None,
            out_upper=list(hi) if violated else None,
        )


@dataclass(frozen=True)
class Verdict:
    """What :meth:`Network.certify` found."""

    kind: str  # "holds", "violated" or "unknown"
    boxes: int
    proven_fraction: float
    seconds: float
    weights_root: bytes
    case_index: Optional[int]
    counterexample: Optional[list]
    out_lower: Optional[list]
    out_upper: Optional[list]


class Spec(_Handle):
    """A VNN-LIB property (the subset VNN-COMP uses); errors name line and column."""

    _free = staticmethod(lambda h: _C.ibp_spec_free(h))

    @classmethod
    def from_vnnlib(cls, path: str) -> "Spec":
        out = ctypes.c_void_p()
        _check(_C.ibp_spec_from_vnnlib(str(path).encode(), ctypes.byref(out)))
        return cls(out.value)

    @property
    def input_count(self) -> int:
        return _C.ibp_spec_input_count(self._live())

    @property
    def output_count(self) -> int:
        return _C.ibp_spec_output_count(self._live())

    @property
    def case_count(self) -> int:
        return _C.ibp_spec_case_count(self._live())


def _outward_f32_torch(x: Any, down: bool) -> Any:
    """A contiguous float32 CUDA tensor on x's device whose every value is on the safe side of
    x's: rounded down for lower bounds (``down``), up for upper ones."""
    import torch

    if x.dtype == torch.float32:
        return x.detach().contiguous()
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"bounds must be real numbers; got dtype {x.dtype}")
    wide = x.detach().to(torch.float64)
    if torch.isnan(wide).any():
        raise ValueError("bounds contain NaN")
    f = wide.to(torch.float32)
    toward = torch.full_like(f, -float("inf") if down else float("inf"))
    off = (f.to(torch.float64) > wide) if down else (f.to(torch.float64) < wide)
    return torch.where(off, torch.nextafter(f, toward), f).contiguous()


# cudaStreamLegacy: the legacy default stream as a handle that is not NULL.
_CUDA_STREAM_LEGACY = 1


def _stream_handle(stream: int) -> ctypes.c_void_p:
    """A caller's cudaStream_t (an int, as torch's ``Stream.cuda_stream``) for libvram. Handle 0
    is the legacy default stream (torch's default stream), but libvram reads NULL as "a stream
    of libvram's own", which is not ordered after the caller's work: the boxes could be read
    before the kernels that write them have run. So 0 goes as cudaStreamLegacy."""
    return ctypes.c_void_p(stream or _CUDA_STREAM_LEGACY)


# ibp_method values by name (include/vram.h).
_METHODS = {"interval": 0, "linear": 1, "linear_both": 2, "linear_guarded": 3}


def _method(name: str) -> int:
    if name not in _METHODS:
        raise ValueError(f"method must be one of {sorted(_METHODS)}; got {name!r}")
    return _METHODS[name]


def _outward_f32(x: Any, direction: Callable) -> Any:
    """``x`` as a C-contiguous float32 array whose every value is on the safe side of x's
    (rounded toward ``direction``: np.floor for lower bounds, np.ceil for upper)."""
    import numpy as np

    if _is_torch(x):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype == np.float32:
        return np.ascontiguousarray(a)
    if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"bounds must be real numbers; got dtype {a.dtype}")
    wide = a.astype(np.float64)
    if np.isnan(wide).any():
        raise ValueError("bounds contain NaN")
    f = wide.astype(np.float32)
    toward = -np.inf if direction is np.floor else np.inf
    off = (f.astype(np.float64) > wide) if direction is np.floor else (f.astype(np.float64) < wide)
    f = np.where(off, np.nextafter(f, np.float32(toward)), f)
    return np.ascontiguousarray(f, dtype=np.float32)


class Context(_Handle):
    """A libvram context: one backend, one seal key. Use as a context manager, or let it go.

    ``key``: at least 32 bytes (copied). ``backend``: "auto" (the GPU when usable, else host
    memory with a logged warning), "cuda" (never host memory) or "host"."""

    _free = staticmethod(lambda h: _C.vram_ctx_free(h))

    def __init__(self, key: bytes, backend: str = "auto", device: int = 0, capacity_bytes: int = 0,
                 max_threads: int = 0, allow_fault_drills: bool = False):
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {sorted(_BACKENDS)}; got {backend!r}")
        key = bytes(key)
        opts = _lib.CtxOptions(
            struct_size=ctypes.sizeof(_lib.CtxOptions), backend=_BACKENDS[backend], device=device,
            key=_u8(key), key_len=len(key), capacity_bytes=capacity_bytes,
            flags=_ALLOW_FAULT_DRILLS if allow_fault_drills else 0, max_threads=max_threads)
        out = ctypes.c_void_p()
        _check(_C.vram_ctx_new(ctypes.byref(opts), ctypes.byref(out)))
        super().__init__(out.value)
        self.device = device
        #: Where this context seals: "cuda" or "host" (what "auto" chose).
        self.backend = {1: "cuda", 2: "host"}.get(_C.vram_ctx_backend(self._h), "host")

    def usage(self) -> tuple[int, int]:
        """(bytes held by this context's shards, capacity)."""
        used, cap = ctypes.c_uint64(), ctypes.c_uint64()
        _check(_C.vram_ctx_usage(self._live(), ctypes.byref(used), ctypes.byref(cap)))
        return used.value, cap.value

    def seal(self, name: str, data: Any) -> Shard:
        """Seals ``data`` as shard ``name``. Host data (bytes, bytearray, NumPy arrays, CPU torch
        tensors, anything with the buffer protocol) is copied into the context's backend. A CUDA
        torch tensor is sealed **in place** (no copy): contiguous, on this context's GPU, and
        kept alive by the shard — its storage must not be freed or resized while sealed."""
        if _is_torch(data) and data.is_cuda:
            return self._seal_cuda_tensor(name, data)
        ptr, n, keep = _host_bytes(data)
        out = ctypes.c_void_p()
        _check(_C.vram_seal(self._live(), name.encode(), ptr, n, ctypes.byref(out)))
        del keep
        return Shard(out.value, name)

    def _seal_cuda_tensor(self, name: str, t: Any) -> Shard:
        if self.backend != "cuda":
            raise ValueError("a CUDA tensor can only be sealed in place by a CUDA context "
                             f"(this one seals in {self.backend} memory)")
        if t.device.index != self.device:
            raise ValueError(f"the tensor is on cuda:{t.device.index}; this context uses "
                             f"cuda:{self.device}")
        if not t.is_contiguous():
            raise ValueError("the tensor is not contiguous: call .contiguous() first (a copy)")
        n = t.numel() * t.element_size()
        if n == 0:
            raise ValueError("an empty tensor has nothing to seal")
        out = ctypes.c_void_p()
        _check(_C.vram_seal_device(self._live(), name.encode(), ctypes.c_void_p(t.data_ptr()), n,
                                   ctypes.byref(out)))
        return Shard(out.value, name, keep=t)

    def seal_expect(self, name: str, data: Any, root: bytes) -> Shard:
        """Seals ``data`` and keeps it only if its Merkle root is ``root``; otherwise raises
        Error(VRAM_ERR_INTEGRITY) and keeps nothing."""
        ptr, n, keep = _host_bytes(data)
        root = bytes(root)
        if len(root) != 32:
            raise ValueError("root must be 32 bytes")
        out = ctypes.c_void_p()
        _check(_C.vram_seal_expect(self._live(), name.encode(), ptr, n, _u8(root),
                                   ctypes.byref(out)))
        del keep
        return Shard(out.value, name)

    def verify(self, shard: Shard) -> VerifyResult:
        """Re-hashes the shard where it lives. Damage is a result (``intact`` False), not an
        error; an error means the check itself could not run."""
        r = _lib.VerifyReport()
        s = _C.vram_verify(self._live(), shard._live(), ctypes.byref(r))
        if s not in (_OK, _INTEGRITY):
            _check(s)
        return _verify_result(r, s)

    def damaged_regions(self, shard: Shard) -> list[int]:
        """The byte offset of every damaged 1 MiB region of ``shard`` (empty when intact),
        after a fresh re-hash where the bytes live."""
        for _ in range(4):
            n = ctypes.c_size_t(0)
            s = _C.vram_verify_regions(self._live(), shard._live(), None, 0, ctypes.byref(n))
            if s == _OK:
                return []
            if s != _TOO_SMALL:
                _check(s)
            out = (ctypes.c_uint64 * n.value)()
            s = _C.vram_verify_regions(self._live(), shard._live(), out, n.value, ctypes.byref(n))
            if s == _INTEGRITY:
                return list(out[: n.value])
            if s != _TOO_SMALL:
                _check(s)
        _check(s)  # the damage kept growing between calls
        return []

    def restore(self, shard: Shard, data: Any) -> None:
        """Repairs ``shard`` in place from its sealed bytes ``data`` (host memory): refused with
        Error(VRAM_ERR_INTEGRITY), nothing written, unless they hash to the sealed root; only the
        damaged regions are rewritten, at the same address (for a CUDA tensor sealed in place,
        into the tensor). No other call may use the shard meanwhile."""
        ptr, n, keep = _host_bytes(data)
        _check(_C.vram_shard_restore(self._live(), shard._live(), ptr, n))
        del keep

    def verify_many_async(self, shards: Sequence[Shard], stream: int | None = None) -> Ticket:
        """Starts verifying ``shards`` without blocking (on the CUDA backend, queued on
        ``stream``, a cudaStream_t as an int such as ``torch.cuda.current_stream().cuda_stream``;
        None: libvram's own). Poll ``ticket.done()``; ``ticket.wait()`` gives the results."""
        arr = (ctypes.c_void_p * max(len(shards), 1))(*[s._live().value for s in shards])
        out = ctypes.c_void_p()
        _check(_C.vram_verify_many_async(self._live(), arr, len(shards),
                                         None if stream is None else _stream_handle(stream),
                                         ctypes.byref(out)))
        return Ticket(out.value, len(shards))

    def scrubber(self, shards: Sequence[Shard], on_damage: Callable[[str, list[int]], None] | None = None,
                 max_sms: int = 0, max_threads: int = 0, max_bytes_per_second: int = 0,
                 pass_period: float = 0.0, start_paused: bool = False) -> Scrubber:
        """Starts scrubbing ``shards`` in the background within a budget: at most ``max_sms``
        SMs (CUDA; 0 = 2) or ``max_threads`` threads (host; 0 = 1), at most
        ``max_bytes_per_second`` (0 = no cap), a pass at most every ``pass_period`` seconds
        (0 = back to back). Each shard is verified first: a damaged one raises Error
        (VRAM_ERR_INTEGRITY). See vram_scrubber_new()."""
        for name, v in (("max_sms", max_sms), ("max_threads", max_threads),
                        ("max_bytes_per_second", max_bytes_per_second), ("pass_period", pass_period)):
            if v < 0:
                raise ValueError(f"{name} must not be negative, got {v}")
        keep = None
        opts = _lib.ScrubberOptions()
        opts.struct_size = ctypes.sizeof(opts)
        opts.max_sms = int(max_sms)
        opts.max_threads = int(max_threads)
        opts.max_bytes_per_second = int(max_bytes_per_second)
        opts.pass_period_ns = int(pass_period * 1e9)
        opts.flags = 1 if start_paused else 0
        if on_damage is not None:
            def trampoline(_userdata, _shard, shard_id, offsets, n):
                try:
                    on_damage(shard_id.decode("utf-8", "replace"), [offsets[i] for i in range(n)])
                except Exception:  # noqa: BLE001 - must not break libvram's thread
                    import traceback

                    traceback.print_exc()

            keep = _lib.DAMAGE(trampoline)
            opts.on_damage = keep
        arr = (ctypes.c_void_p * max(len(shards), 1))(*[s._live().value for s in shards])
        out = ctypes.c_void_p()
        _check(_C.vram_scrubber_new(self._live(), arr, len(shards), ctypes.byref(opts), ctypes.byref(out)))
        return Scrubber(out.value, keep, shards)

    def verify_many(self, shards: Sequence[Shard]) -> list[VerifyResult]:
        """Re-hashes every shard in one batch (one kernel launch on the GPU)."""
        if not shards:
            return []
        arr = (ctypes.c_void_p * len(shards))(*[s._live().value for s in shards])
        reports = (_lib.VerifyReport * len(shards))()
        s = _C.vram_verify_many(self._live(), arr, len(shards), reports)
        if s not in (_OK, _INTEGRITY):
            _check(s)
        return [_verify_result(r, r.status) for r in reports]

    def record_open(self, record: bytes) -> RecordInfo:
        """Authenticates a seal record with no live shard; Error(VRAM_ERR_BAD_SEAL) if altered,
        forged, truncated or of another key."""
        record = bytes(record)
        i = _lib.RecordInfo(struct_size=ctypes.sizeof(_lib.RecordInfo))
        _check(_C.vram_record_open(self._live(), _u8(record), len(record), ctypes.byref(i)))
        return RecordInfo(i.shard_id.decode(), i.byte_len, i.leaf_size, bytes(i.root),
                          {1: "cuda", 2: "host"}.get(i.backend, str(i.backend)), i.device,
                          i.seal_time_unix_ns, bytes(i.key_id))

    def record_verify(self, record: bytes, shard: Shard) -> None:
        """Checks an authentic record describes ``shard``'s bytes (VRAM_ERR_INTEGRITY if not)."""
        record = bytes(record)
        _check(_C.vram_record_verify(self._live(), _u8(record), len(record), shard._live()))

    def load_safetensors(self, path: str, expected: Manifest | None = None,
                         progress: Callable[[int, int], bool | None] | None = None) -> Model:
        """Loads a .safetensors file, a sharded checkpoint's index.json, or a directory, sealing
        every tensor under its name. ``expected``: the manifest the files must match.
        ``progress(done, total)`` returning False cancels (Error VRAM_ERR_CANCELLED)."""
        opts = _lib.LoadOptions(struct_size=ctypes.sizeof(_lib.LoadOptions), flags=_REGION_ROOTS)
        if expected is not None:
            opts.expected = expected._live()
        if progress is not None:
            def cb(_userdata, done, total):
                try:
                    return 0 if progress(done, total) is not False else 1
                except Exception:  # noqa: BLE001 - an exception cancels, never crosses into C
                    return 1
            opts.progress = _lib.PROGRESS(cb)
        out = ctypes.c_void_p()
        _check(_C.vram_load_safetensors(self._live(), str(path).encode(), ctypes.byref(opts),
                                        ctypes.byref(out)))
        return Model(out.value, self)

    def import_manifest(self, data: bytes) -> Manifest:
        """Authenticates exported manifest bytes under this context's key."""
        data = bytes(data)
        out = ctypes.c_void_p()
        _check(_C.vram_manifest_import(self._live(), _u8(data), len(data), ctypes.byref(out)))
        return Manifest(out.value)

    def manifest_from_shards(self, model_name: str, shards: Sequence[Shard]) -> Manifest:
        """A manifest of these shards (with region roots), under this context's key."""
        arr = (ctypes.c_void_p * max(len(shards), 1))(*[s._live().value for s in shards])
        opts = _lib.ManifestOptions(struct_size=ctypes.sizeof(_lib.ManifestOptions),
                                    flags=_REGION_ROOTS)
        out = ctypes.c_void_p()
        _check(_C.vram_manifest_from_shards(self._live(), model_name.encode(), arr, len(shards),
                                            ctypes.byref(opts), ctypes.byref(out)))
        return Manifest(out.value)

    def network_from_nnet(self, path: str) -> Network:
        """A network read from an NNet file, its weights sealed in this context."""
        out = ctypes.c_void_p()
        _check(_C.ibp_model_from_nnet(self._live(), str(path).encode(), ctypes.byref(out)))
        return Network(out.value, self)

    def network_from_onnx(self, path: str) -> Network:
        """A network read from an ONNX file (ibp_model_from_onnx), its weights sealed in
        this context; an operator libvram does not support raises Error naming it."""
        out = ctypes.c_void_p()
        _check(_C.ibp_model_from_onnx(self._live(), str(path).encode(), None, ctypes.byref(out)))
        return Network(out.value, self)


class SealedModule:
    """Every parameter and buffer of a torch module, sealed under its name."""

    def __init__(self, ctx: Context, shards: Mapping[str, Shard]):
        self.ctx = ctx
        self.shards = dict(shards)

    def verify(self) -> dict[str, VerifyResult]:
        """All tensors in one batch; the damaged ones have ``intact`` False."""
        names = list(self.shards)
        return dict(zip(names, self.ctx.verify_many([self.shards[n] for n in names])))

    def damaged(self) -> list[str]:
        return [n for n, r in self.verify().items() if not r.intact]

    def manifest(self, model_name: str) -> Manifest:
        return self.ctx.manifest_from_shards(model_name, list(self.shards.values()))

    def close(self) -> None:
        for s in self.shards.values():
            s.close()


def seal_module(ctx: Context, module: Any, prefix: str = "") -> SealedModule:
    """Seals every parameter and buffer of a loaded ``torch.nn.Module`` under its name (from
    ``named_parameters`` / ``named_buffers``, with ``prefix``). On a CUDA context the GPU
    tensors are sealed in place (no copy); host tensors are copied. Empty tensors are skipped.
    All or nothing: on error the shards sealed so far are freed and the error raised."""
    items: Iterable = list(module.named_parameters()) + list(module.named_buffers())
    shards: dict[str, Shard] = {}
    try:
        for name, t in items:
            if t.numel() == 0:
                continue
            shards[prefix + name] = ctx.seal(prefix + name, t.detach())
    except BaseException:
        for s in shards.values():
            s.close()
        raise
    return SealedModule(ctx, shards)


def certify(network: str, prop: str, timeout: float = 300.0, seed: int = 0,
            progress: Optional[Callable[[int, float], bool]] = None, backend: str = "host") -> Verdict:
    """``vram certify NET.onnx PROP.vnnlib`` from Python: seals the ONNX network in a fresh
    context (a random key: roots do not depend on it), reads the VNN-LIB property and decides
    it (see :meth:`Network.certify`). ``backend="cuda"`` runs the search on the GPU (networks
    that are chains of linear layers with ReLU), ``"host"`` on the CPU."""
    import os

    with Context(os.urandom(32), backend=backend) as ctx:
        net = ctx.network_from_onnx(network)
        try:
            spec = Spec.from_vnnlib(prop)
            try:
                return net.certify(spec, timeout=timeout, seed=seed, progress=progress)
            finally:
                spec.close()
        finally:
            net.close()
