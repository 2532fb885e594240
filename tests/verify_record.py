#!/usr/bin/env python3
"""Independent verifier for libvram seal records (docs/seal-format.md), standard library only.

    verify_record.py RECORD_FILE DATA_FILE KEY_HEX

Checks the record's HMAC under the key derived from the secret, and that the data's RFC 9162
Merkle root equals the record's root. Prints the record's fields; exits 0 when both hold,
1 otherwise, 2 on a malformed record.
"""
import hashlib
import hmac
import struct
import sys

SALT = b"libvram seal v1"


def hkdf_sha256(secret: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(SALT, secret, hashlib.sha256).digest()
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


def merkle_root(data: bytes, leaf_size: int) -> bytes:
    """RFC 9162 Merkle Tree Hash over leaf_size-byte leaves."""
    level = [hashlib.sha256(b"\x00" + data[i:i + leaf_size]).digest()
             for i in range(0, len(data), leaf_size)]

    def mth(lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return level[lo]
        k = 1
        while k * 2 < hi - lo:
            k *= 2
        return hashlib.sha256(b"\x01" + mth(lo, lo + k) + mth(lo + k, hi)).digest()

    return mth(0, len(level))


def parse(record: bytes) -> dict:
    if len(record) < 16 or record[:8] != b"VRAMSEAL":
        raise ValueError("not a VRAMSEAL record")
    version, body_len = struct.unpack(">HI", record[8:14])
    if version != 1 or len(record) != 14 + body_len + 32:
        raise ValueError("unsupported version or wrong length")
    (id_len,) = struct.unpack(">H", record[14:16])
    p = 16 + id_len
    if 2 + id_len + 73 != body_len:
        raise ValueError("id length disagrees with body length")
    byte_len, leaf_size = struct.unpack(">QI", record[p:p + 12])
    root = record[p + 12:p + 44]
    kind, device, seal_ns = struct.unpack(">BiQ", record[p + 44:p + 57])
    return {
        "shard_id": record[16:p].decode("utf-8"),
        "byte_len": byte_len,
        "leaf_size": leaf_size,
        "root": root,
        "residency": "host" if kind == 0 else f"cuda:{device}",
        "seal_time_unix_ns": seal_ns,
        "key_id": record[p + 57:p + 73],
        "body": record[:14 + body_len],
        "mac": record[14 + body_len:],
    }


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    record = open(sys.argv[1], "rb").read()
    data = open(sys.argv[2], "rb").read()
    secret = bytes.fromhex(sys.argv[3])
    try:
        r = parse(record)
    except (ValueError, struct.error, UnicodeDecodeError) as e:
        print(f"malformed record: {e}")
        return 2
    mac_key = hkdf_sha256(secret, b"libvram/hmac-key", 32)
    key_id = hkdf_sha256(secret, b"libvram/key-id", 16)
    for k in ("shard_id", "byte_len", "leaf_size", "residency", "seal_time_unix_ns"):
        print(f"{k}: {r[k]}")
    print(f"root: {r['root'].hex()}")
    ok = True
    if not hmac.compare_digest(r["key_id"], key_id):
        print("FAIL: record was sealed under another key")
        ok = False
    if not hmac.compare_digest(hmac.new(mac_key, r["body"], hashlib.sha256).digest(), r["mac"]):
        print("FAIL: MAC does not match")
        ok = False
    if len(data) != r["byte_len"] or not hmac.compare_digest(merkle_root(data, r["leaf_size"]), r["root"]):
        print("FAIL: data does not match the sealed root")
        ok = False
    print("OK: record authentic and data matches" if ok else "REJECTED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
