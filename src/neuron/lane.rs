//! [`Lane`]: the numeric type the neuron math is written over, so one body of code runs on a
//! scalar `f32` (the reference path, tails, the micro runtime's mirror) and on `wide::f32x8`
//! (the fused kernels).
//!
//! The two implementations perform the same IEEE operations in the same order (no fused
//! multiply-add, no reassociation), so a scalar and a vector evaluation of the same expression
//! give bit-identical results. The one exception is [`Lane::exp`]: `f32x8` uses `wide`'s
//! polynomial, `f32` uses libm; they agree to a few ulp (only the sigmoid surrogate uses it).

use std::ops::{Add, Div, Mul, Neg, Sub};
use wide::f32x8;

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

impl Lane for f32x8 {
    type Mask = f32x8;

    #[inline(always)]
    fn splat(v: f32) -> Self {
        f32x8::splat(v)
    }
    #[inline(always)]
    fn ge(self, rhs: Self) -> f32x8 {
        self.simd_ge(rhs)
    }
    #[inline(always)]
    fn le(self, rhs: Self) -> f32x8 {
        self.simd_le(rhs)
    }
    #[inline(always)]
    fn select(mask: f32x8, a: Self, b: Self) -> Self {
        mask.select(a, b)
    }
    #[inline(always)]
    fn keep(mask: f32x8, a: Self) -> Self {
        mask & a
    }
    #[inline(always)]
    fn abs(self) -> Self {
        f32x8::abs(self)
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
        f32x8::exp(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scalar and vector lanes agree bit for bit on every operation except `exp`, including the
    /// NaN and signed-zero conventions of `max`/`min` and comparisons.
    #[test]
    fn scalar_and_vector_lanes_agree() {
        let a = [0.5f32, -1.25, f32::NAN, 3.0, -0.0, 1e30, f32::INFINITY, 2.0];
        let b = [0.25f32, -1.25, 1.0, f32::NAN, 0.0, -1e30, 1.0, 7.5];
        let (va, vb) = (f32x8::new(a), f32x8::new(b));
        let bits = |v: f32x8| v.to_array().map(f32::to_bits);
        let ge = va.ge(vb).to_bitmask();
        let le = va.le(vb).to_bitmask();
        let vmax = bits(Lane::max(va, vb));
        let vmin = bits(Lane::min(va, vb));
        let vsel = bits(<f32x8 as Lane>::select(va.ge(vb), va, vb));
        let vkeep = bits(<f32x8 as Lane>::keep(va.le(vb), va));
        let vabs = bits(Lane::abs(va));
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
        let v = Lane::exp(f32x8::new(x)).to_array();
        for (xi, vi) in x.iter().zip(v) {
            let s = xi.exp();
            assert!(
                (vi - s).abs() <= 4.0 * f32::EPSILON * s,
                "exp({xi}): {vi} vs {s}"
            );
        }
    }
}
