//! Outward rounding and the sound dot product that every CPU bound rests on.
//!
//! Every bound is computed in f64 together with a rigorous bound on its rounding error, then
//! rounded *outward* to f32. Products of two f32 values are exact in f64 (24 + 24 < 53
//! significand bits); the error of an n-term f64 sum is at most γₙ·Σ|terms| with
//! γₙ = n·u / (1 − n·u), u = 2⁻⁵³ (Higham, *Accuracy and Stability of Numerical Algorithms*,
//! §3.1). See docs/soundness.md.

/// Largest f32 ≤ `x` (NaN gives −∞, the only lower bound that is always safe).
///
/// Without a data-dependent branch: whether round-to-nearest went up is close to a coin toss on
/// real bounds, and as a branch it was mispredicted half the time (narrowing 65 536 × 5 linear
/// bounds took 9 ms instead of 2 on the dev VM). `f64::from(y) − x` is exact (both are within
/// one f32 step of each other), so the sign bit of `0 − diff` says whether `y` is above `x`;
/// one f32 step down is one unit off the bits, towards the sign (a `y` of +0 is never above
/// `x`: a negative `x` rounds to −0, whose step is the smallest negative subnormal, as
/// `next_down`'s).
pub fn down32(x: f64) -> f32 {
    let y = x as f32; // round to nearest, may overflow to ±∞
    let diff = f64::from(y) - x;
    let above = ((0.0 - diff).to_bits() >> 63) as u32;
    let bits = y.to_bits();
    let toward = ((bits >> 31) << 1).wrapping_sub(1); // +1 below zero, −1 above
    let stepped = f32::from_bits(bits.wrapping_add(above.wrapping_mul(toward)));
    if x.is_finite() {
        stepped
    } else if x.is_nan() {
        f32::NEG_INFINITY
    } else {
        y
    }
}

/// Smallest f32 ≥ `x` (NaN gives +∞).
pub fn up32(x: f64) -> f32 {
    -down32(-x)
}

/// The largest f64 below `x`, as `f64::next_down`, without a data-dependent branch on the
/// sign (the same reason as [`down32`]).
pub fn below(x: f64) -> f64 {
    let bits = x.to_bits();
    let stepped = f64::from_bits(bits.wrapping_add(((bits >> 63) << 1).wrapping_sub(1)));
    if x == 0.0 {
        -f64::from_bits(1)
    } else if x.is_nan() || x == f64::NEG_INFINITY {
        x
    } else {
        stepped
    }
}

/// The smallest f64 above `x`, as `f64::next_up`.
pub fn above(x: f64) -> f64 {
    -below(-x)
}

/// A lower bound in f32 of every real in `[s − err, s + err]`.
pub fn lower32(s: f64, err: f64) -> f32 {
    if err == 0.0 {
        down32(s)
    } else {
        // s − err is itself rounded to nearest; one step down makes it a true lower bound.
        down32((s - err).next_down())
    }
}

/// An upper bound in f32 of every real in `[s − err, s + err]`.
pub fn upper32(s: f64, err: f64) -> f32 {
    if err == 0.0 {
        up32(s)
    } else {
        up32((s + err).next_up())
    }
}

/// A lower bound in f64 of every real in `[s − err, s + err]` (NaN gives −∞).
pub fn lower64(s: f64, err: f64) -> f64 {
    let v = (s - err).next_down();
    if v.is_nan() { f64::NEG_INFINITY } else { v }
}

/// An upper bound in f64 of every real in `[s − err, s + err]` (NaN gives +∞).
pub fn upper64(s: f64, err: f64) -> f64 {
    let v = (s + err).next_up();
    if v.is_nan() { f64::INFINITY } else { v }
}

/// γₙ for f64, inflated slightly so the f64 evaluation of the bound itself is covered.
pub fn gamma(n: u64) -> f64 {
    let u = f64::EPSILON / 2.0;
    let nu = n as f64 * u;
    if nu >= 0.5 {
        return f64::INFINITY;
    }
    nu / (1.0 - nu) * (1.0 + 1e-12)
}

/// Accumulates the exact interval of Σ wᵢ·xᵢ (+ constants) for xᵢ ∈ [lᵢ, uᵢ], in f64 with a
/// running bound on rounding error, and yields outward-rounded f32 bounds.
#[derive(Debug, Clone, Copy, Default)]
pub struct SoundAcc {
    lo: f64,
    hi: f64,
    mag_lo: f64,
    mag_hi: f64,
    /// Absolute error already known from elsewhere (e.g. inexact folded weights).
    extra: f64,
    terms: u64,
}

impl SoundAcc {
    /// Adds w·x for x ∈ [l, u]. The product is rounded (exact when both are f32 values), which
    /// the γ bound covers as one more rounding per term.
    #[inline]
    pub fn term(&mut self, w: f64, l: f64, u: f64) {
        if w == 0.0 {
            return; // 0·∞ would be NaN; the exact term is 0.
        }
        let (pl, pu) = if w > 0.0 {
            (w * l, w * u)
        } else {
            (w * u, w * l)
        };
        self.lo += pl;
        self.hi += pu;
        self.mag_lo += pl.abs();
        self.mag_hi += pu.abs();
        self.terms += 1;
    }

    /// Adds an exactly known constant (a bias).
    #[inline]
    pub fn constant(&mut self, c: f64) {
        self.lo += c;
        self.hi += c;
        self.mag_lo += c.abs();
        self.mag_hi += c.abs();
        self.terms += 1;
    }

    /// Adds an absolute error bound that the caller has established.
    pub fn error(&mut self, e: f64) {
        self.extra += e;
    }

    /// The f64 sums before rounding error is accounted for (for callers that continue in f64).
    pub fn raw(&self) -> (f64, f64, f64, f64) {
        let g = gamma(self.terms + 2);
        (
            self.lo,
            self.hi,
            g * self.mag_lo + self.extra,
            g * self.mag_hi + self.extra,
        )
    }

    /// Outward-rounded f64 bounds of the exact interval (∞ − ∞ widens to ±∞).
    pub fn finish64(&self) -> (f64, f64) {
        let (lo, hi, err_lo, err_hi) = self.raw();
        (
            lower64(lo, err_lo * (1.0 + 1e-12)),
            upper64(hi, err_hi * (1.0 + 1e-12)),
        )
    }

    /// Outward-rounded f32 bounds of the exact interval.
    pub fn finish(&self) -> (f32, f32) {
        let (l, u) = self.finish64();
        (down32(l), up32(u))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The branch-free steps are bit for bit the plain definitions, on special values and on
    /// random bit patterns (NaN, infinities, subnormals and the neighbours of f32 values).
    #[test]
    fn branch_free_steps_equal_the_definitions() {
        fn down_ref(x: f64) -> f32 {
            if x.is_nan() {
                return f32::NEG_INFINITY;
            }
            let y = x as f32;
            if f64::from(y) > x { y.next_down() } else { y }
        }
        fn up_ref(x: f64) -> f32 {
            if x.is_nan() {
                return f32::INFINITY;
            }
            let y = x as f32;
            if f64::from(y) < x { y.next_up() } else { y }
        }
        let same32 = |a: f32, b: f32| a.to_bits() == b.to_bits();
        let same64 = |a: f64, b: f64| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        let mut xs = vec![
            0.0,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            f64::MAX,
            -f64::MAX,
            f64::MIN_POSITIVE,
            f64::from_bits(1),
            -f64::from_bits(1),
            f64::from(f32::MAX),
            -f64::from(f32::MAX),
            f64::from(f32::MAX).next_up(),
            f64::from(f32::MIN_POSITIVE),
            f64::from(f32::from_bits(1)),
            f64::from(f32::from_bits(1)) / 2.0,
            -f64::from(f32::from_bits(1)) / 2.0,
            1e-300,
            -1e-300,
        ];
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            xs.push(f64::from_bits(s));
            let f = f64::from(f32::from_bits((s >> 32) as u32));
            xs.extend([f, f.next_up(), f.next_down()]);
        }
        for &x in &xs {
            assert!(same32(down32(x), down_ref(x)), "down32({x:e})");
            assert!(same32(up32(x), up_ref(x)), "up32({x:e})");
            assert!(same64(below(x), x.next_down()), "below({x:e})");
            assert!(same64(above(x), x.next_up()), "above({x:e})");
        }
    }

    #[test]
    fn directed_conversions() {
        let x = 0.1f64; // not an f32
        assert!(f64::from(down32(x)) < x && f64::from(up32(x)) > x);
        assert_eq!(up32(x), down32(x).next_up());
        assert_eq!(down32(0.5), 0.5);
        assert_eq!(up32(0.5), 0.5);
        assert_eq!(down32(f64::NAN), f32::NEG_INFINITY);
        assert_eq!(up32(f64::NAN), f32::INFINITY);
        assert_eq!(down32(1e300), f32::MAX);
        assert_eq!(up32(1e300), f32::INFINITY);
        assert_eq!(up32(-1e300), f32::MIN);
        assert_eq!(down32(f64::INFINITY), f32::INFINITY);
    }

    #[test]
    fn zero_weight_times_infinity_is_zero() {
        let mut a = SoundAcc::default();
        a.term(0.0, f64::NEG_INFINITY, f64::INFINITY);
        a.term(2.0, 1.0, 3.0);
        assert_eq!(a.finish(), (2.0f32.next_down(), 6.0f32.next_up()));
        let (l, u) = a.finish64();
        assert!(l < 2.0 && l > 2.0 - 1e-12 && u > 6.0 && u < 6.0 + 1e-12);
    }

    #[test]
    fn opposite_infinities_widen_not_nan() {
        let mut a = SoundAcc::default();
        a.term(1.0, f64::NEG_INFINITY, f64::INFINITY);
        a.term(-1.0, f64::NEG_INFINITY, f64::INFINITY);
        let (l, u) = a.finish();
        assert_eq!((l, u), (f32::NEG_INFINITY, f32::INFINITY));
    }
}
