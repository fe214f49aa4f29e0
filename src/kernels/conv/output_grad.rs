//! `∂L/∂y` of a conv as its backward kernels read it: given, or formed from a following
//! training batch norm's output gradient and input as the kernel loads it.
//!
//! Why: a conv followed by a batch norm gets `∂L/∂y = a_c·dy + b_c·(x − μ_c) + c_c`
//! ([`GradAffine`]) from the batch norm's backward, a pass that reads `dy` and `x` and writes
//! `∂L/∂y` only for the conv's gradients to read it again. A kernel that forms it as it loads
//! each plane reads `dy` and `x` instead, and the write and one read of `∂L/∂y` are saved
//! (`mnist-cnn`'s conv2: a 12.8 MB stream each). [`GradAffine::apply`] rounds each step once,
//! so the values are the bits the batch norm's own pass writes.

use super::ConvGeom;
use crate::kernels::bn::GradAffine;
use crate::kernels::elementwise::prefetch;
use rayon::prelude::*;

/// `∂L/∂y` of a conv, `[N, C_out, OH, OW]`.
#[derive(Clone, Copy, Debug)]
pub enum OutputGrad<'a> {
    /// `∂L/∂y` itself.
    Dense(&'a [f32]),
    /// A following training batch norm's output gradient `grad` and input `bn_input` (the
    /// conv's output, the same shape), `∂L/∂y` being their channel's [`GradAffine`] (one per
    /// output channel).
    ThroughBn {
        /// The batch norm's output gradient.
        grad: &'a [f32],
        /// The batch norm's input.
        bn_input: &'a [f32],
        /// The batch norm's per-channel backward affines.
        affines: &'a [GradAffine],
    },
}

impl<'a> OutputGrad<'a> {
    /// Elements of `∂L/∂y`.
    pub fn len(&self) -> usize {
        match self {
            OutputGrad::Dense(dy) => dy.len(),
            OutputGrad::ThroughBn { grad, .. } => grad.len(),
        }
    }

    /// True if there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True if a [`OutputGrad::ThroughBn`]'s parts agree: the input as long as the gradient,
    /// one affine per channel of `c_out`. Always true for [`OutputGrad::Dense`].
    pub fn is_consistent(&self, c_out: usize) -> bool {
        match self {
            OutputGrad::Dense(_) => true,
            OutputGrad::ThroughBn {
                grad,
                bn_input,
                affines,
            } => bn_input.len() == grad.len() && affines.len() == c_out,
        }
    }

    /// Writes the `dst.len()` values of `∂L/∂y` from flat index `at` (all in channel
    /// `channel`) to `dst`.
    #[inline(always)]
    pub fn read(&self, at: usize, channel: usize, dst: &mut [f32]) {
        match *self {
            OutputGrad::Dense(dy) => dst.copy_from_slice(&dy[at..][..dst.len()]),
            OutputGrad::ThroughBn {
                grad,
                bn_input,
                affines,
            } => {
                let k = affines[channel];
                let (g, x) = (&grad[at..][..dst.len()], &bn_input[at..][..dst.len()]);
                for ((d, &gv), &xv) in dst.iter_mut().zip(g).zip(x) {
                    *d = k.apply(gv, xv);
                }
            }
        }
    }

    /// The `len` values of `∂L/∂y` from flat index `at` (all in channel `channel`): a slice of
    /// it if it is [`OutputGrad::Dense`], else formed in `buf` (grown as needed).
    #[inline]
    pub fn span<'b>(
        &self,
        at: usize,
        len: usize,
        channel: usize,
        buf: &'b mut Vec<f32>,
    ) -> &'b [f32]
    where
        'a: 'b,
    {
        match *self {
            OutputGrad::Dense(dy) => &dy[at..][..len],
            OutputGrad::ThroughBn { .. } => {
                let dst = grown(buf, len);
                self.read(at, channel, dst);
                dst
            }
        }
    }

    /// Image `image` of `∂L/∂y` (`c_out` planes of `plane` values), as [`OutputGrad::span`].
    pub fn image<'b>(
        &self,
        image: usize,
        c_out: usize,
        plane: usize,
        buf: &'b mut Vec<f32>,
    ) -> &'b [f32]
    where
        'a: 'b,
    {
        let len = c_out * plane;
        let at = image * len;
        match *self {
            OutputGrad::Dense(dy) => &dy[at..][..len],
            OutputGrad::ThroughBn { .. } => {
                let dst = grown(buf, len);
                self.read_images(image, c_out, plane, dst);
                dst
            }
        }
    }

    /// Writes the images of `∂L/∂y` from image `first` (`c_out` planes of `plane` values
    /// each) to `dst`, as many as it holds.
    #[inline]
    pub fn read_images(&self, first: usize, c_out: usize, plane: usize, dst: &mut [f32]) {
        let at = first * c_out * plane;
        for (i, p) in dst.chunks_exact_mut(plane).enumerate() {
            self.read(at + i * plane, i % c_out, p);
        }
    }

    /// Asks the hardware for the `len` values from `at` (both streams of a
    /// [`OutputGrad::ThroughBn`]).
    #[inline]
    pub fn prefetch(&self, at: usize, len: usize) {
        match *self {
            OutputGrad::Dense(dy) => prefetch(&dy[at..][..len]),
            OutputGrad::ThroughBn { grad, bn_input, .. } => {
                prefetch(&grad[at..][..len]);
                prefetch(&bn_input[at..][..len]);
            }
        }
    }

    /// `∂L/∂y` of the conv `g` as one buffer (a pooled one: [`crate::buffer_pool`]), formed
    /// image by image on all threads, for kernels that read it only whole.
    ///
    /// # Panics
    /// If the length disagrees with `g` or the parts disagree.
    pub fn to_dense(&self, g: &ConvGeom) -> Vec<f32> {
        assert!(
            self.len() == g.n * g.out_img() && self.is_consistent(g.c_out),
            "conv2d: output gradient does not match {g:?}"
        );
        let mut out = crate::buffer_pool::overwritable(self.len());
        let plane = g.out_plane();
        out.par_chunks_mut(g.out_img().max(1))
            .enumerate()
            .for_each(|(image, dst)| self.read_images(image, g.c_out, plane, dst));
        out
    }
}

/// The first `len` elements of `buf`, grown with zeros if it is shorter.
fn grown(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

#[cfg(test)]
mod tests {
    use super::super::sparse::SpikeBits;
    use super::super::tests::{rand_grad_affines, rand_vec, same_bits as same};
    use super::super::{backward_input, backward_input_from, backward_weight_spikes};
    use super::super::{backward_weight_spikes_from, weight_grad_reads_spikes, winograd};
    use super::*;

    /// Through a batch norm, the input and weight gradients are the bits of the same kernels
    /// on `∂L/∂y` formed first — on F(4×4) (`mnist-cnn`'s conv2), F(2×2), the im2col fallback
    /// (a formed buffer) and, where it reads spike bits, the Winograd weight gradient — and
    /// the formed `∂L/∂y` is `GradAffine::apply` of every element.
    #[test]
    fn gradients_through_a_batch_norm_are_the_dense_paths_bits() {
        let mut seed = 11u64;
        for (n, c_in, hw, c_out) in [(3, 32, 14, 64), (2, 32, 8, 32), (2, 3, 9, 5)] {
            let g = ConvGeom::new(n, c_in, hw, hw, c_out, 3, 1, 1).unwrap();
            let len = n * g.out_img();
            let (grad, bn_input) = (rand_vec(len, &mut seed), rand_vec(len, &mut seed));
            let affines = rand_grad_affines(c_out, &mut seed);
            let through = OutputGrad::ThroughBn {
                grad: &grad,
                bn_input: &bn_input,
                affines: &affines,
            };
            let dy = through.to_dense(&g);
            for (i, &v) in dy.iter().enumerate() {
                let k = affines[(i / g.out_plane()) % c_out];
                assert_eq!(v.to_bits(), k.apply(grad[i], bn_input[i]).to_bits());
            }
            let weight = rand_vec(g.weight_len(), &mut seed);
            let (mut want, mut got) = (vec![0.0; n * g.in_img()], vec![f32::NAN; n * g.in_img()]);
            backward_input(&g, &dy, &weight, &mut want);
            backward_input_from(&g, through, &weight, &mut got);
            assert!(same(&want, &got), "{g:?}: input gradient");
            assert_eq!(winograd::preferred(&g), c_in >= 32, "{g:?}: the path meant");
            if weight_grad_reads_spikes(&g) {
                let x: Vec<f32> = rand_vec(n * g.in_img(), &mut seed)
                    .iter()
                    .map(|&v| if v > 0.3 { 0.5 } else { 0.0 })
                    .collect();
                let bits = SpikeBits::from_f32(&x, n, c_in, hw * hw, 0.5);
                let mut ws = Default::default();
                let (mut want, mut got) = (weight.clone(), weight.clone());
                backward_weight_spikes(&g, &bits, &dy, &mut want, &mut ws);
                backward_weight_spikes_from(&g, &bits, through, &mut got, &mut ws);
                assert!(same(&want, &got), "{g:?}: weight gradient");
            }
        }
    }

    /// A batch norm's parts that disagree with the conv are refused, not read past.
    #[test]
    #[should_panic(expected = "does not match")]
    fn mismatched_affines_are_refused() {
        let g = ConvGeom::new(1, 3, 5, 5, 4, 3, 1, 1).unwrap();
        let v = vec![0.0; g.out_img()];
        let affines = vec![GradAffine::default(); 3];
        let through = OutputGrad::ThroughBn {
            grad: &v,
            bn_input: &v,
            affines: &affines,
        };
        through.to_dense(&g);
    }
}
