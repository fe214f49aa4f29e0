//! The training batch norm's affine applied to the fused LIF kernels' input as it is loaded
//! ([`InputAffine`]), and the per-lane coefficients of a chunk's vector groups
//! ([`AffineCursor`]).

use super::fused::{LANES, V};

/// A per-channel affine `(x − mean[c])·scale[c] + shift[c]` applied to the input as it is
/// loaded (a training batch norm's output, never written out), with the arithmetic of
/// [`crate::kernels::bn::normalize`] (`bn::affine8` per lane) so the values are the same bits.
/// Neuron `j` of a chunk (`first + j` within its step) is in channel
/// `((first + j) / plane) % mean.len()`.
pub(super) struct InputAffine<'a> {
    /// Per-channel mean.
    pub mean: &'a [f32],
    /// Per-channel scale.
    pub scale: &'a [f32],
    /// Per-channel shift.
    pub shift: &'a [f32],
    /// Neurons per channel plane. A vector group that straddles two planes (`plane` not a
    /// multiple of 16, e.g. `mnist-cnn`'s 14×14) takes each lane's channel.
    pub plane: usize,
    /// The step index of the chunk's first neuron.
    pub first: usize,
}

impl InputAffine<'_> {
    /// The channel of the chunk's neuron `j`.
    #[inline(always)]
    pub(super) fn channel(&self, j: usize) -> usize {
        ((self.first + j) / self.plane) % self.mean.len()
    }
}

/// The affine's per-lane coefficients for the vector groups of a chunk, taken in increasing
/// order: the plane boundary ahead is tracked, so a group costs no division unless it
/// straddles one (then each lane finds its channel).
pub(super) struct AffineCursor<'a, 'b> {
    affine: &'b InputAffine<'a>,
    /// The channel plane (counted from the step's start) of the last group's first lane.
    plane: usize,
    /// Chunk index where the next plane starts.
    next: usize,
}

impl<'a, 'b> AffineCursor<'a, 'b> {
    pub(super) fn new(affine: &'b InputAffine<'a>) -> Self {
        let plane = affine.first / affine.plane;
        let next = (plane + 1) * affine.plane - affine.first;
        AffineCursor {
            affine,
            plane,
            next,
        }
    }

    /// `(mean, scale, shift)` of the lanes `j..j + LANES`; `j` never decreases between calls.
    #[inline(always)]
    pub(super) fn at(&mut self, j: usize) -> (V, V, V) {
        let a = self.affine;
        while j >= self.next {
            self.plane += 1;
            self.next += a.plane;
        }
        if j + LANES <= self.next {
            let c = self.plane % a.mean.len();
            return (
                V::splat(a.mean[c]),
                V::splat(a.scale[c]),
                V::splat(a.shift[c]),
            );
        }
        // The lanes' planes, walked forward from this group's first: one division per
        // straddling group, not two per lane (a 14×14 plane straddles every 12th group).
        let (mut m, mut k, mut b) = ([0.0; LANES], [0.0; LANES], [0.0; LANES]);
        let (mut c, mut next) = (self.plane % a.mean.len(), self.next);
        for l in 0..LANES {
            while j + l >= next {
                next += a.plane;
                c = if c + 1 == a.mean.len() { 0 } else { c + 1 };
            }
            debug_assert_eq!(c, a.channel(j + l));
            (m[l], k[l], b[l]) = (a.mean[c], a.scale[c], a.shift[c]);
        }
        (V::new(m), V::new(k), V::new(b))
    }
}
