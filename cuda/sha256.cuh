// SHA-256 and the RFC 9162 leaf and node hashes as device functions, shared by the Merkle
// kernels (cuda/merkle.cu) and their benchmark variants.
#pragma once
#include <cstdint>

namespace lvk_sha {


static __constant__ uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

__device__ __forceinline__ uint32_t rotr(uint32_t x, int n) { return __funnelshift_r(x, x, n); }

__device__ __forceinline__ void init_state(uint32_t s[8]) {
    s[0] = 0x6a09e667; s[1] = 0xbb67ae85; s[2] = 0x3c6ef372; s[3] = 0xa54ff53a;
    s[4] = 0x510e527f; s[5] = 0x9b05688c; s[6] = 0x1f83d9ab; s[7] = 0x5be0cd19;
}

// a + b issued as an integer multiply-add (b * one + a) on the FMA pipe. `one` is a runtime 1
// (a kernel argument) so the compiler cannot fold it back into an IADD on the integer ALU pipe,
// which the rotates and logic of SHA-256 already saturate. Measured on an H200
// (bench/merkle_variants.cu): moving the t1, e and t2 additions over gives +9 % (765 -> 834
// GB/s); moving the message-schedule additions as well overloads the FMA pipe (731 GB/s).
__device__ __forceinline__ uint32_t madd(uint32_t a, uint32_t b, uint32_t one) {
    uint32_t r;
    asm("mad.lo.u32 %0, %1, %2, %3;" : "=r"(r) : "r"(b), "r"(one), "r"(a));
    return r;
}

// One SHA-256 compression; w holds the block as 16 big-endian words (overwritten). `one`
// must be 1 (see madd).
__device__ __forceinline__ void compress(uint32_t s[8], uint32_t w[16], uint32_t one) {
    uint32_t a = s[0], b = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];
#pragma unroll
    for (int i = 0; i < 64; i++) {
        uint32_t wi;
        if (i < 16) {
            wi = w[i];
        } else {
            uint32_t w15 = w[(i - 15) & 15], w2 = w[(i - 2) & 15];
            uint32_t s0 = rotr(w15, 7) ^ rotr(w15, 18) ^ (w15 >> 3);
            uint32_t s1 = rotr(w2, 17) ^ rotr(w2, 19) ^ (w2 >> 10);
            wi = w[i & 15] = w[i & 15] + s0 + w[(i - 7) & 15] + s1;
        }
        uint32_t S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
        uint32_t ch = g ^ (e & (f ^ g));
        uint32_t S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
        uint32_t maj = (a & b) | (c & (a | b));
        uint32_t t1 = madd(madd(h, S1, one), madd(ch, K[i], one), one) + wi;
        uint32_t t2 = madd(S0, maj, one);
        h = g; g = f; f = e; e = madd(d, t1, one); d = c; c = b; b = a; a = t1 + t2;
    }
    s[0] += a; s[1] += b; s[2] += c; s[3] += d; s[4] += e; s[5] += f; s[6] += g; s[7] += h;
}

// Big-endian word of the bytes (x.byte3, y.byte0, y.byte1, y.byte2) where x and y are
// consecutive little-endian words of the data: the one-byte RFC 9162 prefix shifts every
// message word by one byte, and this permutation folds that shift into the load.
__device__ __forceinline__ uint32_t shifted_be(uint32_t x, uint32_t y) { return __byte_perm(x, y, 0x3456); }

// Absorbs the 64 data bytes at q (16-byte aligned), shifted one byte by the prefix or by the
// previous block's last byte (`carry`, in its top byte), which it then updates.
__device__ __forceinline__ void absorb_aligned(uint32_t s[8], const uint4 *q, uint32_t &carry, uint32_t one) {
    uint4 a = __ldg(q), b = __ldg(q + 1), c = __ldg(q + 2), d = __ldg(q + 3);
    uint32_t w[16];
    w[0] = shifted_be(carry, a.x); w[1] = shifted_be(a.x, a.y); w[2] = shifted_be(a.y, a.z); w[3] = shifted_be(a.z, a.w);
    w[4] = shifted_be(a.w, b.x); w[5] = shifted_be(b.x, b.y); w[6] = shifted_be(b.y, b.z); w[7] = shifted_be(b.z, b.w);
    w[8] = shifted_be(b.w, c.x); w[9] = shifted_be(c.x, c.y); w[10] = shifted_be(c.y, c.z); w[11] = shifted_be(c.z, c.w);
    w[12] = shifted_be(c.w, d.x); w[13] = shifted_be(d.x, d.y); w[14] = shifted_be(d.y, d.z); w[15] = shifted_be(d.z, d.w);
    carry = d.w;
    compress(s, w, one);
}

// The final block after whole 64-byte blocks: the carried last data byte, 0x80, the length.
__device__ __forceinline__ void absorb_final(uint32_t s[8], uint32_t carry, uint64_t bits, uint32_t one) {
    uint32_t w[16];
    w[0] = (carry & 0xff000000u) | 0x00800000u;
#pragma unroll
    for (int k = 1; k < 14; k++) w[k] = 0;
    w[14] = static_cast<uint32_t>(bits >> 32);
    w[15] = static_cast<uint32_t>(bits);
    compress(s, w, one);
}

// SHA-256(prefix ‖ p[0..m)). `aligned`: p is 16-byte aligned, so whole 64-byte blocks are read
// with vector loads; the remainder (and everything, when unaligned) byte by byte.
__device__ void hash_prefixed(uint8_t prefix, const uint8_t *p, uint64_t m, bool aligned, uint32_t one,
                              uint32_t out[8]) {
    uint32_t s[8];
    init_state(s);
    uint32_t carry = static_cast<uint32_t>(prefix) << 24;
    uint64_t full = aligned ? m / 64 : 0;
    const uint4 *q = reinterpret_cast<const uint4 *>(p);
    for (uint64_t j = 0; j < full; j++) absorb_aligned(s, q + 4 * j, carry, one);
    const uint8_t *rest = p + 64 * full;
    uint64_t r = m - 64 * full;
    uint64_t bits = (m + 1) * 8;
    if (r == 0) {
        absorb_final(s, carry, bits, one); // whole 64-byte blocks (every full leaf)
    } else {
        // Tail: the carried byte, the remaining r bytes, 0x80, zeros, the 64-bit bit length.
        uint64_t tail = 1 + r;
        uint64_t blocks = (tail + 1 + 8 + 63) / 64;
        for (uint64_t blk = 0; blk < blocks; blk++) {
            uint32_t w[16];
            for (int k = 0; k < 16; k++) {
                uint32_t word = 0;
                for (int b = 0; b < 4; b++) {
                    uint64_t i = blk * 64 + 4 * k + b;
                    uint32_t byte;
                    if (i == 0) byte = carry >> 24;
                    else if (i <= r) byte = rest[i - 1];
                    else if (i == r + 1) byte = 0x80;
                    else byte = 0;
                    word = (word << 8) | byte;
                }
                w[k] = word;
            }
            if (blk == blocks - 1) {
                w[14] = static_cast<uint32_t>(bits >> 32);
                w[15] = static_cast<uint32_t>(bits);
            }
            compress(s, w, one);
        }
    }
#pragma unroll
    for (int i = 0; i < 8; i++) out[i] = s[i];
}

// SHA-256(0x01 ‖ left ‖ right) over two hashes held as big-endian state words.
__device__ void node_hash(const uint32_t *l, const uint32_t *r, uint32_t one, uint32_t out[8]) {
    uint32_t x[16];
#pragma unroll
    for (int i = 0; i < 8; i++) { x[i] = l[i]; x[8 + i] = r[i]; }
    uint32_t s[8];
    init_state(s);
    uint32_t w[16];
    w[0] = 0x01000000u | (x[0] >> 8);
#pragma unroll
    for (int k = 1; k < 16; k++) w[k] = (x[k - 1] << 24) | (x[k] >> 8);
    compress(s, w, one);
#pragma unroll
    for (int k = 1; k < 15; k++) w[k] = 0;
    w[0] = (x[15] << 24) | 0x00800000u;
    w[15] = 65 * 8;
    compress(s, w, one);
#pragma unroll
    for (int i = 0; i < 8; i++) out[i] = s[i];
}

} // namespace lvk_sha
