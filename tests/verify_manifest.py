#!/usr/bin/env python3
"""Independent verifier for libvram model manifests (docs/manifest-format.md), standard
library only (hashlib, hmac, json).

    verify_manifest.py MANIFEST_FILE KEY_HEX [TENSOR_NAME DATA_FILE]...

Checks that the manifest is canonical, made under the key derived from the secret, and that its
HMAC matches; then, for each TENSOR_NAME DATA_FILE pair, that the file's bytes are that
tensor's (length and RFC 9162 Merkle root), naming the first differing 1 MiB region when the
manifest records region roots. Prints what it checked; exits 0 when everything holds, 1 when
something does not, 2 on a malformed or unsupported manifest.
"""
import hashlib
import hmac
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from verify_record import hkdf_sha256, merkle_root  # noqa: E402

MAC_DOMAIN = b"libvram manifest v1\n"
REGION = 1 << 20


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("a key appears twice")
    return dict(pairs)


def tensor_root(data: bytes, leaf_size: int) -> bytes:
    """The tensor's root; an empty tensor's is SHA-256 of no bytes (RFC 9162's empty list)."""
    return merkle_root(data, leaf_size) if data else hashlib.sha256(b"").digest()


def region_roots(data: bytes, leaf_size: int) -> list:
    return [merkle_root(data[i:i + REGION], leaf_size) for i in range(0, len(data), REGION)]


def main() -> int:
    if len(sys.argv) < 3 or len(sys.argv) % 2 == 0:
        print(__doc__, file=sys.stderr)
        return 2
    raw = open(sys.argv[1], "rb").read()
    secret = bytes.fromhex(sys.argv[2])
    try:
        m = json.loads(raw, object_pairs_hook=no_duplicates)
        if m.get("format") != "libvram-manifest":
            raise ValueError("not a libvram manifest")
        if m.get("version") != 1:
            print(f"unsupported manifest version {m.get('version')}")
            return 2
        if canonical(m) != raw:
            raise ValueError("not in canonical form")
    except (ValueError, UnicodeDecodeError, AttributeError) as e:
        print(f"malformed manifest: {e}")
        return 2
    mac_key = hkdf_sha256(secret, b"libvram/hmac-key", 32)
    key_id = hkdf_sha256(secret, b"libvram/key-id", 16)
    ok = True
    if m.get("key_id") != key_id.hex():
        print("FAIL: manifest was made under another key")
        ok = False
    body = {k: v for k, v in m.items() if k != "mac"}
    tag = hmac.new(mac_key, MAC_DOMAIN + canonical(body), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(tag, str(m.get("mac"))):
        print("FAIL: MAC does not match")
        ok = False
    print(f"model: {m['model']}, {len(m['tensors'])} tensor(s)")
    tensors = {t["name"]: t for t in m["tensors"]}
    for name, path in zip(sys.argv[3::2], sys.argv[4::2]):
        t = tensors.get(name)
        data = open(path, "rb").read()
        if t is None:
            print(f"FAIL: {name}: not in the manifest")
            ok = False
        elif len(data) != t["byte_len"]:
            print(f"FAIL: {name}: {len(data)} bytes, the manifest says {t['byte_len']}")
            ok = False
        elif not hmac.compare_digest(tensor_root(data, t["leaf_size"]).hex(), t["root"]):
            where = ""
            if "regions" in t:
                mine = [r.hex() for r in region_roots(data, t["leaf_size"])]
                first = next(i for i, (a, b) in enumerate(zip(mine, t["regions"])) if a != b)
                where = f", first in the region at byte offset {first * REGION}"
            print(f"FAIL: {name}: bytes differ from the manifest's{where}")
            ok = False
        else:
            print(f"ok: {name}")
    print("OK: manifest authentic" + (" and files match" if len(sys.argv) > 3 else "") if ok else "REJECTED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
