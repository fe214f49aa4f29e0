//! Pixel encoding for static images: normalization and the training augmentations (CIFAR crop +
//! flip, digit shifts), applied while a batch is assembled (images stay `u8` in memory).
//!
//! The result equals torchvision's `RandomCrop(32, padding=4)` → `RandomHorizontalFlip()` →
//! `ToTensor()` → `Normalize(mean, std)` in float32: padding happens in pixel space, so a padded
//! pixel is `(0 − mean) / std` after normalization, and each value is computed with the same two
//! float32 operations (`v / 255`, then `(x − mean) / std`).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Per-channel lookup from a pixel byte to its normalized value.
#[derive(Clone, Debug)]
pub(crate) struct Normalizer {
    lut: Vec<[f32; 256]>,
}

impl Normalizer {
    /// `mean`/`std` per channel, of pixel/255.
    pub fn new(mean: &[f32], std: &[f32]) -> Self {
        let lut = mean
            .iter()
            .zip(std)
            .map(|(&m, &s)| std::array::from_fn(|v| (v as f32 / 255.0 - m) / s))
            .collect();
        Normalizer { lut }
    }

    /// Normalized value of byte `v` in channel `c`.
    #[inline]
    pub fn value(&self, c: usize, v: u8) -> f32 {
        self.lut[c][usize::from(v)]
    }
}

/// One sample's augmentation: where the `H×W` crop sits in the image zero-padded by `pad` on
/// every side, and whether the crop is mirrored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Augment {
    /// Zero padding around the image, in pixels.
    pub pad: usize,
    /// Top row of the crop in the padded image, `0..=2·pad`.
    pub top: usize,
    /// Left column of the crop in the padded image, `0..=2·pad`.
    pub left: usize,
    /// Mirror left-right after cropping.
    pub flip: bool,
}

/// Zero padding of the CIFAR random crop, in pixels.
pub const CROP_PAD: usize = 4;

/// Zero padding of the digit shift, in pixels: translations by up to ±2 pixels, the usual MNIST
/// augmentation (a digit keeps its identity under a small shift, not under a flip).
pub const SHIFT_PAD: usize = 2;

/// What the training split's batches go through before normalization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Augmentation {
    /// Images as stored.
    Off,
    /// torchvision `RandomCrop(size, padding = 4)` + `RandomHorizontalFlip()` (the CIFAR recipe).
    CropFlip,
    /// `RandomCrop(size, padding = 2)` without flip: a random shift by up to ±2 pixels (digits).
    Shift,
}

impl Augmentation {
    /// The augmentation of dataset sample `index` in `epoch` of a run seeded with `seed`, `None`
    /// for [`Augmentation::Off`]. `CropFlip` draws exactly [`augment_params`]; `Shift` draws
    /// `top`, `left` uniform in `0..=4` from the same keyed stream, never flipping.
    pub fn params(self, seed: u64, epoch: u64, index: usize) -> Option<Augment> {
        match self {
            Augmentation::Off => None,
            Augmentation::CropFlip => Some(augment_params(seed, epoch, index)),
            Augmentation::Shift => {
                let mut rng = keyed_rng(DOMAIN_AUGMENT, seed, epoch, index as u64);
                let span = 2 * SHIFT_PAD + 1;
                Some(Augment {
                    pad: SHIFT_PAD,
                    top: below(&mut rng, span),
                    left: below(&mut rng, span),
                    flip: false,
                })
            }
        }
    }
}

/// Domain tags keep the permutation and augmentation streams independent for equal inputs.
const DOMAIN_PERMUTATION: u64 = 0x6d70_736e_6e2d_7065; // "mpsnn-pe"
const DOMAIN_AUGMENT: u64 = 0x6d70_736e_6e2d_6175; // "mpsnn-au"

/// A ChaCha8 generator keyed by `(domain, a, b, c)`: the 32-byte key is the four values
/// little-endian, so streams are a pure, documented function of their inputs.
fn keyed_rng(domain: u64, a: u64, b: u64, c: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    for (chunk, v) in key.chunks_exact_mut(8).zip([domain, a, b, c]) {
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

/// A uniform integer in `0..n` from one 64-bit draw (Lemire's multiply-shift; the bias, at most
/// `n / 2^64`, is far below anything observable and keeps the mapping portable).
fn below(rng: &mut ChaCha8Rng, n: usize) -> usize {
    ((u128::from(rng.next_u64()) * n as u128) >> 64) as usize
}

/// The CIFAR augmentation ([`Augmentation::CropFlip`]) of dataset sample `index` in `epoch` of a
/// run seeded with `seed`.
///
/// A pure function of its arguments, so resumed and multi-process runs augment identically:
/// draws `top`, `left` uniform in `0..=8` and `flip` with probability 1/2 from
/// ChaCha8(key = `[tag, seed, epoch, index]`).
pub fn augment_params(seed: u64, epoch: u64, index: usize) -> Augment {
    let mut rng = keyed_rng(DOMAIN_AUGMENT, seed, epoch, index as u64);
    let span = 2 * CROP_PAD + 1;
    Augment {
        pad: CROP_PAD,
        top: below(&mut rng, span),
        left: below(&mut rng, span),
        flip: below(&mut rng, 2) == 1,
    }
}

/// The order in which an epoch visits `n` samples: a pure function of `(n, seed, epoch)`.
///
/// Fisher–Yates over `0..n` (for `i` from `n-1` down to 1, swap `i` with a uniform `j` in
/// `0..=i`), drawing from ChaCha8(key = `[tag, seed, epoch, 0]`) with multiply-shift reduction.
/// Every rank of a multi-process run computes the same permutation and takes its shard.
///
/// ```
/// use mpsnn::data::epoch_permutation;
/// let p = epoch_permutation(10, 42, 3);
/// assert_eq!(p, epoch_permutation(10, 42, 3));
/// let mut sorted = p.clone();
/// sorted.sort();
/// assert_eq!(sorted, (0..10).collect::<Vec<_>>());
/// ```
pub fn epoch_permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = keyed_rng(DOMAIN_PERMUTATION, seed, epoch, 0);
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = below(&mut rng, i + 1);
        p.swap(i, j);
    }
    p
}

/// Writes one `[C, H, W]` image into `out` (same length), normalized and, when `aug` is given,
/// cropped from the image zero-padded by `aug.pad` and possibly mirrored.
pub(crate) fn write_image(
    src: &[u8],
    shape: [usize; 3],
    norm: &Normalizer,
    aug: Option<Augment>,
    out: &mut [f32],
) {
    let [channels, h, w] = shape;
    let plane = h * w;
    let Some(a) = aug else {
        for (c, (o, s)) in out
            .chunks_exact_mut(plane)
            .zip(src.chunks_exact(plane))
            .enumerate()
        {
            for (o, &s) in o.iter_mut().zip(s) {
                *o = norm.value(c, s);
            }
        }
        return;
    };
    for c in 0..channels {
        let pad = norm.value(c, 0);
        let (src, out) = (&src[c * plane..][..plane], &mut out[c * plane..][..plane]);
        for (y, row) in out.chunks_exact_mut(w).enumerate() {
            // Padded-image row `y + top` is source row `y + top - pad`.
            let sy = (y + a.top).wrapping_sub(a.pad);
            if sy >= h {
                row.fill(pad);
                continue;
            }
            let src_row = &src[sy * w..][..w];
            for (x, o) in row.iter_mut().enumerate() {
                let cx = if a.flip { w - 1 - x } else { x };
                let sx = (cx + a.left).wrapping_sub(a.pad);
                *o = if sx < w {
                    norm.value(c, src_row[sx])
                } else {
                    pad
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_matches_torchvision_float32_arithmetic() {
        let n = Normalizer::new(&[0.4914, 0.4822], &[0.2470, 0.2435]);
        for v in [0u8, 1, 128, 255] {
            let x = v as f32 / 255.0;
            assert_eq!(n.value(0, v), (x - 0.4914) / 0.2470);
            assert_eq!(n.value(1, v), (x - 0.4822) / 0.2435);
        }
    }

    #[test]
    fn crop_and_flip_move_pixels_as_torchvision_does() {
        // A 1×4×4 image with distinct values; identity normalization keeps bytes visible.
        let norm = Normalizer::new(&[0.0], &[1.0 / 255.0]);
        let src: Vec<u8> = (1..=16).collect();
        let mut out = vec![f32::NAN; 16];
        let at = |o: &[f32], y: usize, x: usize| o[y * 4 + x].round() as u8;
        // top = left = pad: the crop is the original image.
        let id = Augment {
            pad: CROP_PAD,
            top: 4,
            left: 4,
            flip: false,
        };
        write_image(&src, [1, 4, 4], &norm, Some(id), &mut out);
        assert_eq!(
            out.iter().map(|&v| v.round() as u8).collect::<Vec<_>>(),
            src
        );
        // Shift down-right by one: row 0 and column 0 are padding, (1,1) is source (0,0).
        let shift = Augment {
            pad: CROP_PAD,
            top: 3,
            left: 3,
            flip: false,
        };
        write_image(&src, [1, 4, 4], &norm, Some(shift), &mut out);
        assert_eq!(
            (
                at(&out, 0, 0),
                at(&out, 0, 3),
                at(&out, 1, 1),
                at(&out, 3, 3)
            ),
            (0, 0, 1, 11)
        );
        // Flip after the crop: out(y, x) = crop(y, 3 - x).
        let flip = Augment {
            pad: CROP_PAD,
            top: 4,
            left: 5,
            flip: true,
        };
        write_image(&src, [1, 4, 4], &norm, Some(flip), &mut out);
        assert_eq!((at(&out, 0, 0), at(&out, 0, 1), at(&out, 0, 3)), (0, 4, 2));
    }

    #[test]
    fn augmentation_draws_cover_the_range_and_depend_on_all_inputs() {
        let draws: Vec<Augment> = (0..2000).map(|i| augment_params(7, 1, i)).collect();
        assert!(
            (0..=8).all(|v| draws.iter().any(|a| a.top == v) && draws.iter().any(|a| a.left == v))
        );
        let flips = draws.iter().filter(|a| a.flip).count();
        assert!((900..1100).contains(&flips), "{flips}");
        assert_eq!(augment_params(7, 1, 5), draws[5]);
        let other_epoch: Vec<Augment> = (0..50).map(|i| augment_params(7, 2, i)).collect();
        assert_ne!(other_epoch, draws[..50]);
    }

    #[test]
    fn shift_moves_digits_by_at_most_two_pixels_and_never_flips() {
        let draws: Vec<Augment> = (0..2000)
            .map(|i| Augmentation::Shift.params(7, 1, i).unwrap())
            .collect();
        assert!(draws.iter().all(|a| a.pad == SHIFT_PAD && !a.flip));
        assert!(
            (0..=4).all(|v| draws.iter().any(|a| a.top == v) && draws.iter().any(|a| a.left == v))
        );
        assert!(draws.iter().all(|a| a.top <= 4 && a.left <= 4));
        assert_eq!(Augmentation::Off.params(7, 1, 0), None);
        assert_eq!(
            Augmentation::CropFlip.params(7, 1, 3),
            Some(augment_params(7, 1, 3))
        );
        // top = left = 0: the content moves down-right by two pixels, zeros enter at top-left.
        let norm = Normalizer::new(&[0.0], &[1.0 / 255.0]);
        let src: Vec<u8> = (1..=25).collect();
        let mut out = vec![f32::NAN; 25];
        let a = Augment {
            pad: SHIFT_PAD,
            top: 0,
            left: 0,
            flip: false,
        };
        write_image(&src, [1, 5, 5], &norm, Some(a), &mut out);
        let at = |y: usize, x: usize| out[y * 5 + x].round() as u8;
        assert_eq!((at(0, 0), at(1, 4), at(2, 2), at(4, 4)), (0, 0, 1, 13));
    }
}
