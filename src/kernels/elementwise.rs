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
}
