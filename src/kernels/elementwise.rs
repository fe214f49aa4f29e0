//! Element-wise vector operations (`wide` lanes with scalar tails).

use wide::f32x8;

const LANES: usize = 8;

/// `dst[i] += src[i]`.
///
/// # Panics
/// If the lengths differ.
pub fn add_assign(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "add_assign: length mismatch");
    let mut d = dst.chunks_exact_mut(LANES);
    let mut s = src.chunks_exact(LANES);
    for (dc, sc) in (&mut d).zip(&mut s) {
        let v = f32x8::new(dc.try_into().unwrap()) + f32x8::new(sc.try_into().unwrap());
        dc.copy_from_slice(&v.to_array());
    }
    for (x, y) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *x += *y;
    }
}

/// `dst[i] *= factor`.
pub fn scale(dst: &mut [f32], factor: f32) {
    let f = f32x8::splat(factor);
    let mut d = dst.chunks_exact_mut(LANES);
    for dc in &mut d {
        let v = f32x8::new(dc.try_into().unwrap()) * f;
        dc.copy_from_slice(&v.to_array());
    }
    for x in d.into_remainder() {
        *x *= factor;
    }
}

/// `Σ x[i]` in eight f32 lanes (each lane sums every eighth element), lanes then tail added in
/// a fixed order. For long rows callers split into blocks and accumulate the block sums in f64.
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = f32x8::splat(0.0);
    let mut c = x.chunks_exact(LANES);
    for xc in &mut c {
        acc += f32x8::new(xc.try_into().unwrap());
    }
    let mut s = acc.reduce_add();
    for v in c.remainder() {
        s += *v;
    }
    s
}

/// `dst[i] += a · src[i]`.
///
/// # Panics
/// If the lengths differ.
pub fn axpy(dst: &mut [f32], a: f32, src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "axpy: length mismatch");
    let av = f32x8::splat(a);
    let mut d = dst.chunks_exact_mut(LANES);
    let mut s = src.chunks_exact(LANES);
    for (dc, sc) in (&mut d).zip(&mut s) {
        let v = f32x8::new(sc.try_into().unwrap()).mul_add(av, f32x8::new(dc.try_into().unwrap()));
        dc.copy_from_slice(&v.to_array());
    }
    for (x, y) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *x = y.mul_add(a, *x);
    }
}

/// `dst[i] = src[i] · a + b` (an affine map, e.g. batch-norm with folded statistics).
///
/// # Panics
/// If the lengths differ.
pub fn affine(dst: &mut [f32], src: &[f32], a: f32, b: f32) {
    assert_eq!(dst.len(), src.len(), "affine: length mismatch");
    let (av, bv) = (f32x8::splat(a), f32x8::splat(b));
    let mut d = dst.chunks_exact_mut(LANES);
    let mut s = src.chunks_exact(LANES);
    for (dc, sc) in (&mut d).zip(&mut s) {
        let v = f32x8::new(sc.try_into().unwrap()).mul_add(av, bv);
        dc.copy_from_slice(&v.to_array());
    }
    for (x, y) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *x = y.mul_add(a, b);
    }
}

/// `x[i] = x[i] · a + b` in place.
pub fn affine_inplace(x: &mut [f32], a: f32, b: f32) {
    let (av, bv) = (f32x8::splat(a), f32x8::splat(b));
    let mut d = x.chunks_exact_mut(LANES);
    for dc in &mut d {
        let v = f32x8::new((&*dc).try_into().unwrap()).mul_add(av, bv);
        dc.copy_from_slice(&v.to_array());
    }
    for v in d.into_remainder() {
        *v = v.mul_add(a, b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_and_scale_match_scalar_on_odd_lengths() {
        for n in [0, 1, 7, 8, 9, 17, 127] {
            let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
            let b: Vec<f32> = (0..n).map(|i| 3.0 - i as f32).collect();
            let mut c = a.clone();
            add_assign(&mut c, &b);
            scale(&mut c, -2.0);
            for i in 0..n {
                assert_eq!(c[i], (a[i] + b[i]) * -2.0);
            }
        }
    }

    #[test]
    fn sum_axpy_affine_match_scalar_on_odd_lengths() {
        for n in [0, 1, 7, 8, 9, 17, 127] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let want: f64 = a.iter().map(|&v| v as f64).sum();
            assert!((sum(&a) as f64 - want).abs() < 1e-5, "sum n={n}");

            let mut d = b.clone();
            axpy(&mut d, 0.5, &a);
            let mut e = vec![f32::NAN; n];
            affine(&mut e, &a, 0.5, 0.25);
            let mut f = a.clone();
            affine_inplace(&mut f, 0.5, 0.25);
            for i in 0..n {
                assert!((d[i] - (b[i] + 0.5 * a[i])).abs() < 1e-6);
                assert!((e[i] - (a[i] * 0.5 + 0.25)).abs() < 1e-6);
                assert_eq!(e[i].to_bits(), f[i].to_bits());
            }
        }
    }
}
