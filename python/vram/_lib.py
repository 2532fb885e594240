"""ctypes declarations of libvram's C ABI (include/vram.h) and how the library is found."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

c_u8p = ctypes.POINTER(ctypes.c_uint8)


class CtxOptions(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("backend", ctypes.c_uint32),
        ("device", ctypes.c_int32),
        ("key", c_u8p),
        ("key_len", ctypes.c_size_t),
        ("capacity_bytes", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("max_threads", ctypes.c_uint32),
    ]


class VerifyReport(ctypes.Structure):
    _fields_ = [
        ("status", ctypes.c_uint32),
        ("leaf_size", ctypes.c_uint32),
        ("total_leaves", ctypes.c_uint64),
        ("region_size", ctypes.c_uint64),
        ("total_regions", ctypes.c_uint64),
        ("damaged_regions", ctypes.c_uint64),
        ("first_damaged_offset", ctypes.c_uint64),
    ]


class RecordInfo(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("leaf_size", ctypes.c_uint32),
        ("byte_len", ctypes.c_uint64),
        ("root", ctypes.c_uint8 * 32),
        ("backend", ctypes.c_uint32),
        ("device", ctypes.c_int32),
        ("seal_time_unix_ns", ctypes.c_uint64),
        ("key_id", ctypes.c_uint8 * 16),
        ("shard_id", ctypes.c_char * 257),
    ]


class TensorReport(ctypes.Structure):
    _fields_ = [
        ("verdict", ctypes.c_uint32),
        ("status", ctypes.c_uint32),
        ("shard_index", ctypes.c_size_t),
        ("damaged_regions", ctypes.c_uint64),
        ("first_damaged_offset", ctypes.c_uint64),
    ]


class ManifestSummary(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("tensors", ctypes.c_size_t),
        ("intact", ctypes.c_size_t),
        ("missing", ctypes.c_size_t),
        ("different", ctypes.c_size_t),
        ("damaged", ctypes.c_size_t),
        ("bad_seal", ctypes.c_size_t),
        ("extra", ctypes.c_size_t),
        ("first_extra", ctypes.c_size_t),
    ]


class ManifestOptions(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("dtypes", ctypes.POINTER(ctypes.c_char_p)),
        ("shapes", ctypes.POINTER(ctypes.POINTER(ctypes.c_uint64))),
        ("ranks", ctypes.POINTER(ctypes.c_size_t)),
    ]


class ManifestTensorInfo(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("leaf_size", ctypes.c_uint32),
        ("name", ctypes.c_char_p),
        ("dtype", ctypes.c_char_p),
        ("shape", ctypes.POINTER(ctypes.c_uint64)),
        ("rank", ctypes.c_size_t),
        ("byte_len", ctypes.c_uint64),
        ("root", ctypes.c_uint8 * 32),
        ("region_count", ctypes.c_uint64),
    ]


PROGRESS = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64)
LOG = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_char_p, ctypes.c_char_p)
DAMAGE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p,
                          ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t)


class ScrubberOptions(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("max_sms", ctypes.c_uint32),
        ("max_threads", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("max_bytes_per_second", ctypes.c_uint64),
        ("pass_period_ns", ctypes.c_uint64),
        ("on_damage", DAMAGE),
        ("userdata", ctypes.c_void_p),
    ]


class PropagateOptions(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("memory", ctypes.c_uint32),
        ("stream", ctypes.c_void_p),
        ("spec_rows", ctypes.c_size_t),
        ("spec_c", ctypes.POINTER(ctypes.c_float)),
        ("spec_d", ctypes.POINTER(ctypes.c_float)),
        ("flags", ctypes.c_uint32),
        ("method", ctypes.c_uint32),
    ]


CERTIFY_PROGRESS = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_double)


class CertifyOptions(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("timeout_seconds", ctypes.c_double),
        ("seed", ctypes.c_uint64),
        ("progress", CERTIFY_PROGRESS),
        ("userdata", ctypes.c_void_p),
    ]


class CertifyResult(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("verdict", ctypes.c_uint32),
        ("boxes", ctypes.c_uint64),
        ("proven_fraction", ctypes.c_double),
        ("seconds", ctypes.c_double),
        ("weights_root", ctypes.c_uint8 * 32),
        ("case_index", ctypes.c_uint32),
        ("counterexample", ctypes.POINTER(ctypes.c_double)),
        ("counterexample_out_lower", ctypes.POINTER(ctypes.c_double)),
        ("counterexample_out_upper", ctypes.POINTER(ctypes.c_double)),
    ]


class ScrubStats(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("budget", ctypes.c_uint32),
        ("passes", ctypes.c_uint64),
        ("last_pass_ns", ctypes.c_uint64),
        ("bytes_per_pass", ctypes.c_uint64),
        ("bytes_per_second", ctypes.c_uint64),
        ("shards", ctypes.c_uint64),
        ("damage_reports", ctypes.c_uint64),
        ("damaged_regions", ctypes.c_uint64),
        ("stale_digests", ctypes.c_uint64),
        ("errors", ctypes.c_uint64),
        ("last_error", ctypes.c_uint32),
        ("paused", ctypes.c_uint32),
    ]


class LoadOptions(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("expected", ctypes.c_void_p),
        ("progress", PROGRESS),
        ("userdata", ctypes.c_void_p),
        ("model_name", ctypes.c_char_p),
        ("model_signing", c_u8p),
        ("model_signing_len", ctypes.c_size_t),
    ]


class ModelTensorInfo(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("name", ctypes.c_char_p),
        ("dtype", ctypes.c_char_p),
        ("shape", ctypes.POINTER(ctypes.c_uint64)),
        ("rank", ctypes.c_size_t),
        ("byte_len", ctypes.c_uint64),
        ("shard", ctypes.c_void_p),
        ("data", ctypes.c_void_p),
    ]


class BuildDetails(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("cuda_compiled", ctypes.c_uint32),
        ("cuda_runtime_version", ctypes.c_int32),
        ("cuda_driver_version", ctypes.c_int32),
        ("gpu_count", ctypes.c_int32),
        ("cuda_architectures", ctypes.c_char_p),
        ("version", ctypes.c_char_p),
        ("no_gpu_reason", ctypes.c_char * 256),
    ]


def _candidates() -> list[Path]:
    """Where libvram.so may be: $VRAM_LIBRARY, the copy bundled at install, the checkout this
    package sits in (build/lib, then target/release), then the system's library path."""
    found = []
    env = os.environ.get("VRAM_LIBRARY")
    if env:
        found.append(Path(env))
    here = Path(__file__).resolve().parent
    found.append(here / "libvram.so")
    root = here.parent.parent
    found += [root / "build" / "lib" / "libvram.so", root / "target" / "release" / "libvram.so"]
    system = ctypes.util.find_library("vram")
    if system:
        found.append(Path(system))
    return found


def load() -> ctypes.CDLL:
    tried = []
    for path in _candidates():
        if path.exists() or not path.is_absolute():
            try:
                lib = ctypes.CDLL(str(path))
            except OSError as e:
                tried.append(f"{path}: {e}")
                continue
            _declare(lib)
            return lib
        tried.append(f"{path}: not found")
    raise ImportError(
        "vram: libvram.so was not found. Build it (the README's commands, or cargo build --release), "
        "then reinstall this package, or point VRAM_LIBRARY at it. Tried:\n  " + "\n  ".join(tried)
    )


def _declare(lib: ctypes.CDLL) -> None:
    vp, sz, u8p, cp = ctypes.c_void_p, ctypes.c_size_t, c_u8p, ctypes.c_char_p
    st = ctypes.c_uint32
    sigs = {
        "vram_status_str": (cp, [st]),
        "vram_last_error_message": (sz, [ctypes.c_char_p, sz]),
        "vram_version": (cp, []),
        "vram_build_info": (st, [ctypes.POINTER(BuildDetails)]),
        "vram_ctx_new": (st, [ctypes.POINTER(CtxOptions), ctypes.POINTER(vp)]),
        "vram_ctx_free": (None, [vp]),
        "vram_ctx_backend": (ctypes.c_uint32, [vp]),
        "vram_ctx_usage": (st, [vp, ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_uint64)]),
        "vram_seal": (st, [vp, cp, vp, sz, ctypes.POINTER(vp)]),
        "vram_seal_expect": (st, [vp, cp, vp, sz, u8p, ctypes.POINTER(vp)]),
        "vram_seal_device": (st, [vp, cp, vp, sz, ctypes.POINTER(vp)]),
        "vram_verify": (st, [vp, vp, ctypes.POINTER(VerifyReport)]),
        "vram_verify_many": (st, [vp, ctypes.POINTER(vp), sz, ctypes.POINTER(VerifyReport)]),
        "vram_verify_regions": (st, [vp, vp, ctypes.POINTER(ctypes.c_uint64), sz, ctypes.POINTER(sz)]),
        "vram_shard_restore": (st, [vp, vp, vp, sz]),
        "vram_verify_many_async": (st, [vp, ctypes.POINTER(vp), sz, vp, ctypes.POINTER(vp)]),
        "vram_verify_ticket_query": (st, [vp, ctypes.POINTER(ctypes.c_int)]),
        "vram_verify_ticket_wait": (st, [vp, ctypes.POINTER(VerifyReport)]),
        "vram_verify_ticket_free": (None, [vp]),
        "vram_shard_root": (st, [vp, u8p]),
        "vram_shard_len": (sz, [vp]),
        "vram_shard_device_ptr": (vp, [vp]),
        "vram_shard_record": (st, [vp, u8p, sz, ctypes.POINTER(sz)]),
        "vram_debug_flip_bit": (st, [vp, ctypes.c_uint64]),
        "vram_shard_free": (None, [vp]),
        "vram_record_open": (st, [vp, u8p, sz, ctypes.POINTER(RecordInfo)]),
        "vram_record_verify": (st, [vp, u8p, sz, vp]),
        "vram_manifest_from_shards": (
            st, [vp, cp, ctypes.POINTER(vp), sz, ctypes.POINTER(ManifestOptions), ctypes.POINTER(vp)]),
        "vram_manifest_export": (st, [vp, u8p, sz, ctypes.POINTER(sz)]),
        "vram_manifest_import": (st, [vp, u8p, sz, ctypes.POINTER(vp)]),
        "vram_manifest_check": (
            st, [vp, vp, ctypes.POINTER(vp), sz, ctypes.POINTER(TensorReport), ctypes.POINTER(ManifestSummary)]),
        "vram_manifest_model": (cp, [vp]),
        "vram_manifest_tensor_count": (sz, [vp]),
        "vram_manifest_tensor": (st, [vp, sz, ctypes.POINTER(ManifestTensorInfo)]),
        "vram_manifest_free": (None, [vp]),
        "vram_load_safetensors": (st, [vp, cp, ctypes.POINTER(LoadOptions), ctypes.POINTER(vp)]),
        "vram_model_tensor_count": (sz, [vp]),
        "vram_model_tensor": (st, [vp, sz, ctypes.POINTER(ModelTensorInfo)]),
        "vram_model_manifest": (st, [vp, vp, ctypes.POINTER(vp)]),
        "vram_model_verify": (st, [vp, vp, ctypes.POINTER(TensorReport), ctypes.POINTER(ManifestSummary)]),
        "vram_model_free": (None, [vp]),
        "vram_set_log_callback": (None, [LOG, vp, ctypes.c_uint32]),
        "vram_scrubber_new": (st, [vp, ctypes.POINTER(vp), sz, ctypes.POINTER(ScrubberOptions), ctypes.POINTER(vp)]),
        "vram_scrubber_add": (st, [vp, vp]),
        "vram_scrubber_remove": (st, [vp, vp]),
        "vram_scrubber_pause": (st, [vp]),
        "vram_scrubber_resume": (st, [vp]),
        "vram_scrubber_stats": (st, [vp, ctypes.POINTER(ScrubStats)]),
        "vram_scrubber_free": (None, [vp]),
        "ibp_model_from_nnet": (st, [vp, cp, ctypes.POINTER(vp)]),
        "ibp_model_from_onnx": (st, [vp, cp, vp, ctypes.POINTER(vp)]),
        "ibp_spec_from_vnnlib": (st, [cp, ctypes.POINTER(vp)]),
        "ibp_spec_free": (None, [vp]),
        "ibp_spec_input_count": (sz, [vp]),
        "ibp_spec_output_count": (sz, [vp]),
        "ibp_spec_case_count": (sz, [vp]),
        "ibp_certify": (st, [vp, vp, ctypes.POINTER(CertifyOptions), ctypes.POINTER(CertifyResult)]),
        "ibp_model_input_size": (sz, [vp]),
        "ibp_model_output_size": (sz, [vp]),
        "ibp_propagate": (st, [vp, sz, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_float),
                               ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_float)]),
        "ibp_propagate_ex": (st, [vp, sz, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_float),
                                  ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_float),
                                  ctypes.POINTER(PropagateOptions)]),
        "ibp_model_free": (None, [vp]),
    }
    for name, (res, args) in sigs.items():
        f = getattr(lib, name)
        f.restype = res
        f.argtypes = args
