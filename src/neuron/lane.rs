//! [`Lane`]: the numeric type the neuron math is written over, so one body of code runs on a
//! scalar `f32` (the reference path, tails, the micro runtime's mirror) and on `wide::f32x8`
//! (the eval plane kernels) and `wide::f32x16` (the training kernels).
//!
//! The two implementations perform the same IEEE operations in the same order (no fused
//! multiply-add, no reassociation), so a scalar and a vector evaluation of the same expression
//! give bit-identical results. The one exception is [`Lane::exp`]: the vectors use `wide`'s
//! polynomial, `f32` uses libm; they agree to a few ulp (only the sigmoid surrogate uses it).

use std::ops::{Add, Div, Mul, Neg, Sub};
use wide::{f32x16, f32x8};

/// A value of one or more `f32` lanes with element-wise arithmetic, comparisons and selection.
pub trait Lane:
    Copy
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
{
    /// The result of a comparison: `bool` for `f32`, a lane mask for vectors.
    type Mask: Copy;

    /// Every lane equal to `v`.
    fn splat(v: f32) -> Self;
    /// `self >= rhs` per lane (false if either is NaN).
    fn ge(self, rhs: Self) -> Self::Mask;
    /// `self <= rhs` per lane (false if either is NaN).
    fn le(self, rhs: Self) -> Self::Mask;
    /// Per lane: `a` where `mask` is set, else `b`.
    fn select(mask: Self::Mask, a: Self, b: Self) -> Self;
    /// Per lane: `a` where `mask` is set, else `+0.0` (one AND on vectors).
    fn keep(mask: Self::Mask, a: Self) -> Self;
    /// Absolute value (clears the sign bit).
    fn abs(self) -> Self;
    /// `self > rhs ? self : rhs` per lane (so a NaN on either side, or equal zeros, give `rhs`).
    fn max(self, rhs: Self) -> Self;
    /// `self < rhs ? self : rhs` per lane (so a NaN on either side, or equal zeros, give `rhs`).
    fn min(self, rhs: Self) -> Self;
    /// `e^self` (see the module docs for accuracy).
    fn exp(self) -> Self;
}

impl Lane for f32 {
    type Mask = bool;

    #[inline(always)]
    fn splat(v: f32) -> Self {
        v
    }
    #[inline(always)]
    fn ge(self, rhs: Self) -> bool {
        self >= rhs
    }
    #[inline(always)]
    fn le(self, rhs: Self) -> bool {
        self <= rhs
    }
    #[inline(always)]
    fn select(mask: bool, a: Self, b: Self) -> Self {
        if mask {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    fn keep(mask: bool, a: Self) -> Self {
        if mask {
            a
        } else {
            0.0
        }
    }
    #[inline(always)]
    fn abs(self) -> Self {
        f32::abs(self)
    }
    #[inline(always)]
    fn max(self, rhs: Self) -> Self {
        if self > rhs {
            self
        } else {
            rhs
        }
    }
    #[inline(always)]
    fn min(self, rhs: Self) -> Self {
        if self < rhs {
            self
        } else {
            rhs
        }
    }
    #[inline(always)]
    fn exp(self) -> Self {
        f32::exp(self)
    }
}

/// The vector implementation, the same for every width.
macro_rules! vector_lane {
    ($v:ident) => {
        impl Lane for $v {
            type Mask = $v;

            #[inline(always)]
            fn splat(v: f32) -> Self {
                $v::splat(v)
            }
            #[inline(always)]
            fn ge(self, rhs: Self) -> $v {
                self.simd_ge(rhs)
            }
            #[inline(always)]
            fn le(self, rhs: Self) -> $v {
                self.simd_le(rhs)
            }
            #[inline(always)]
            fn select(mask: $v, a: Self, b: Self) -> Self {
                mask.select(a, b)
            }
            #[inline(always)]
            fn keep(mask: $v, a: Self) -> Self {
                mask & a
            }
            #[inline(always)]
            fn abs(self) -> Self {
                $v::abs(self)
            }
            // x86 `maxps`/`minps` return the second operand unless the comparison holds, which is
            // exactly the scalar rule; elsewhere compare and select.
            #[inline(always)]
            fn max(self, rhs: Self) -> Self {
                #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                return self.fast_max(rhs);
                #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
                return self.simd_gt(rhs).select(self, rhs);
            }
            #[inline(always)]
            fn min(self, rhs: Self) -> Self {
                #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                return self.fast_min(rhs);
                #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
                return self.simd_lt(rhs).select(self, rhs);
            }
            #[inline(always)]
            fn exp(self) -> Self {
                $v::exp(self)
            }
        }
    };
}

vector_lane!(f32x8);
vector_lane!(f32x16);

#[cfg(test)]
mod tests {
    use super::*;

    /// Scalar and vector lanes (both widths) agree bit for bit on every operation except
    /// `exp`, including the NaN and signed-zero conventions of `max`/`min` and comparisons.
    #[test]
    fn scalar_and_vector_lanes_agree() {
        let a = [0.5f32, -1.25, f32::NAN, 3.0, -0.0, 1e30, f32::INFINITY, 2.0];
        let b = [0.25f32, -1.25, 1.0, f32::NAN, 0.0, -1e30, 1.0, 7.5];
        let bits8 = |v: f32x8| v.to_array().map(f32::to_bits).to_vec();
        let (va, vb) = (f32x8::new(a), f32x8::new(b));
        let v8 = [
            bits8(Lane::max(va, vb)),
            bits8(Lane::min(va, vb)),
            bits8(<f32x8 as Lane>::select(va.ge(vb), va, vb)),
            bits8(<f32x8 as Lane>::keep(va.le(vb), va)),
            bits8(Lane::abs(va)),
        ];
        let masks8 = (va.ge(vb).to_bitmask(), va.le(vb).to_bitmask());
        // The 16-lane vector holds `a` (resp. `b`) twice, reversed in its upper half.
        let twice = |x: [f32; 8]| {
            let mut r = [0f32; 16];
            r[..8].copy_from_slice(&x);
            for i in 0..8 {
                r[15 - i] = x[i];
            }
            r
        };
        let (wa, wb) = (f32x16::new(twice(a)), f32x16::new(twice(b)));
        let bits16 = |v: f32x16| {
            let r = v.to_array().map(f32::to_bits);
            assert_eq!(r[8..].iter().rev().copied().collect::<Vec<_>>(), r[..8]);
            r[..8].to_vec()
        };
        let v16 = [
            bits16(Lane::max(wa, wb)),
            bits16(Lane::min(wa, wb)),
            bits16(<f32x16 as Lane>::select(wa.ge(wb), wa, wb)),
            bits16(<f32x16 as Lane>::keep(wa.le(wb), wa)),
            bits16(Lane::abs(wa)),
        ];
        let masks16 = (wa.ge(wb).to_bitmask() & 0xff, wa.le(wb).to_bitmask() & 0xff);
        for (v, (ge, le)) in [(v8, masks8), (v16, masks16)] {
            let [vmax, vmin, vsel, vkeep, vabs] = v;
            for i in 0..8 {
                assert_eq!((ge >> i) & 1 == 1, a[i].ge(b[i]), "ge lane {i}");
                assert_eq!((le >> i) & 1 == 1, a[i].le(b[i]), "le lane {i}");
                assert_eq!(vmax[i], Lane::max(a[i], b[i]).to_bits(), "max lane {i}");
                assert_eq!(vmin[i], Lane::min(a[i], b[i]).to_bits(), "min lane {i}");
                let s = <f32 as Lane>::select(a[i].ge(b[i]), a[i], b[i]);
                assert_eq!(vsel[i], s.to_bits(), "select lane {i}");
                let k = <f32 as Lane>::keep(a[i].le(b[i]), a[i]);
                assert_eq!(vkeep[i], k.to_bits(), "keep lane {i}");
                assert_eq!(vabs[i], Lane::abs(a[i]).to_bits(), "abs lane {i}");
            }
        }
    }

    #[test]
    fn vector_exp_is_close_to_libm_and_saturates() {
        let x = [
            -200.0f32,
            -87.0,
            -1.5,
            0.0,
            0.3,
            10.0,
            80.0,
            f32::NEG_INFINITY,
        ];
        let v8 = Lane::exp(f32x8::new(x)).to_array();
        let mut x16 = [0f32; 16];
        x16[..8].copy_from_slice(&x);
        x16[8..].copy_from_slice(&x);
        let v16 = Lane::exp(f32x16::new(x16)).to_array();
        let vs = v8.iter().chain(&v16[..8]).chain(&v16[8..]);
        for (xi, &vi) in x.iter().cycle().zip(vs) {
            let s = xi.exp();
            assert!(
                (vi - s).abs() <= 4.0 * f32::EPSILON * s,
                "exp({xi}): {vi} vs {s}"
            );
        }
    }
}
