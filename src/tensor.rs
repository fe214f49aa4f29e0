//! [`Tensor`]: a contiguous, row-major `f32` array with a shape.
//!
//! Activations are NCHW with the time axis folded into the batch axis (`N = T·B`, row
//! `n = t·B + b`), see `DESIGN.md`. Kernels work on the flat slice; `ndarray` views are available
//! at the API edge through [`Tensor::view`] and [`Tensor::from_array`].

use crate::error::{Error, Result};
use crate::kernels::conv::sparse::SpikeBits;
use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, IxDyn};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A dense, contiguous, row-major `f32` tensor.
///
/// `spike_scale` is a hint set by spiking layers: when it is `Some(s)`, every element is exactly
/// `0.0` or `s` (TrSG emits `θ·S`, AS/RS-SG emit `S`), which lets consumers take spike-aware
/// paths. Any operation that changes values must clear it; shape-only operations keep it.
///
/// A spike tensor may also carry its bit-packed form ([`Tensor::spike_bits`]), attached by the
/// layer that produced the spikes, so that consumers (event-driven convolutions, identity
/// shortcuts) skip packing the f32 values again. It is a cache of `data`: it never changes
/// what the tensor holds, equality ignores it, and whatever clears the hint clears it too.
/// Equality ignores the [`Tensor::content_id`] as well.
#[derive(Clone, Debug, Default)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
    spike_scale: Option<f32>,
    spike_bits: Option<Arc<SpikeBits>>,
    content_id: u64,
}

/// Source of [`Tensor::content_id`]s.
static NEXT_CONTENT_ID: AtomicU64 = AtomicU64::new(1);

fn fresh_content_id() -> u64 {
    NEXT_CONTENT_ID.fetch_add(1, Ordering::Relaxed)
}

impl PartialEq for Tensor {
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape
            && self.data == other.data
            && self.spike_scale == other.spike_scale
    }
}

impl Tensor {
    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        Tensor {
            shape: shape.to_vec(),
            data: crate::buffer_pool::zeroed(shape.iter().product()),
            spike_scale: None,
            spike_bits: None,
            content_id: fresh_content_id(),
        }
    }

    /// A tensor filled with `value`.
    pub fn full(shape: &[usize], value: f32) -> Self {
        Tensor {
            shape: shape.to_vec(),
            data: vec![value; shape.iter().product()],
            spike_scale: None,
            spike_bits: None,
            content_id: fresh_content_id(),
        }
    }

    /// A scalar stored as shape `[1]` (how LIF parameters and buffers are kept).
    pub fn scalar(value: f32) -> Self {
        Tensor::full(&[1], value)
    }

    /// Wraps `data` with `shape`; fails if the element counts differ.
    ///
    /// ```
    /// use mpsnn::Tensor;
    /// let t = Tensor::from_vec(&[2, 3], vec![0.0; 6]).unwrap();
    /// assert_eq!(t.shape(), &[2, 3]);
    /// assert!(Tensor::from_vec(&[2, 2], vec![0.0; 6]).is_err());
    /// ```
    pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Result<Self> {
        let expected: usize = shape.iter().product();
        if expected != data.len() {
            return Err(Error::ShapeMismatch {
                layer: "Tensor::from_vec".into(),
                expected: format!("{expected} elements for shape {shape:?}"),
                got: format!("{} elements", data.len()),
            });
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            data,
            spike_scale: None,
            spike_bits: None,
            content_id: fresh_content_id(),
        })
    }

    /// Converts an `ndarray` array (any memory order) into a row-major tensor.
    pub fn from_array(array: ArrayD<f32>) -> Self {
        let shape = array.shape().to_vec();
        let data = if array.is_standard_layout() {
            array.into_raw_vec_and_offset().0
        } else {
            array.iter().copied().collect()
        };
        Tensor {
            shape,
            data,
            spike_scale: None,
            spike_bits: None,
            content_id: fresh_content_id(),
        }
    }

    /// An `ndarray` view of the tensor.
    pub fn view(&self) -> ArrayViewD<'_, f32> {
        ArrayViewD::from_shape(IxDyn(&self.shape), &self.data)
            .expect("Tensor invariant: data.len() == product(shape)")
    }

    /// A mutable `ndarray` view of the tensor (clears the spike hint).
    pub fn view_mut(&mut self) -> ArrayViewMutD<'_, f32> {
        self.mark_written();
        ArrayViewMutD::from_shape(IxDyn(&self.shape), &mut self.data)
            .expect("Tensor invariant: data.len() == product(shape)")
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The flat, row-major data.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The flat data, mutable. Clears the spike hint: the caller may write anything.
    pub fn data_mut(&mut self) -> &mut [f32] {
        self.mark_written();
        &mut self.data
    }

    /// Consumes the tensor, returning its data.
    pub fn into_vec(mut self) -> Vec<f32> {
        std::mem::take(&mut self.data)
    }

    /// The same data with another shape of equal element count (keeps the spike hint).
    pub fn reshape(mut self, shape: &[usize]) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != self.data.len() {
            return Err(Error::ShapeMismatch {
                layer: "reshape".into(),
                expected: format!("{} elements", self.data.len()),
                got: format!("{shape:?}"),
            });
        }
        self.shape = shape.to_vec();
        Ok(self)
    }

    /// `Some(s)` if every element is known to be `0.0` or `s` (see the type docs).
    pub fn spike_scale(&self) -> Option<f32> {
        self.spike_scale
    }

    /// Marks (or unmarks) the tensor as holding only `0.0` and `scale`.
    ///
    /// Only spiking layers and shape/selection operations (max-pool, flatten) should set it;
    /// debug builds verify the claim.
    pub fn with_spike_scale(mut self, scale: Option<f32>) -> Self {
        debug_assert!(
            scale.is_none_or(|s| self.data.iter().all(|&v| v == 0.0 || v == s)),
            "spike_scale hint set on a tensor with other values"
        );
        if scale != self.spike_scale {
            self.spike_bits = None;
        }
        self.spike_scale = scale;
        self
    }

    /// The bit-packed form of this spike tensor, if its producer attached one (see the type
    /// docs). Its geometry (`[n, c, plane]`) is the producer's: a consumer checks it
    /// ([`SpikeBits::geometry`]) since reshapes keep the bits.
    pub fn spike_bits(&self) -> Option<&Arc<SpikeBits>> {
        self.spike_bits.as_ref()
    }

    /// Attaches `bits`, the packed form of this tensor's values.
    ///
    /// # Panics
    /// If the tensor carries no spike hint equal to `bits`' scale or the element counts
    /// differ; debug builds also check every bit against the data.
    pub fn with_spike_bits(mut self, bits: Arc<SpikeBits>) -> Self {
        assert_eq!(
            self.spike_scale,
            Some(bits.scale()),
            "with_spike_bits: scale"
        );
        assert_eq!(bits.len(), self.data.len(), "with_spike_bits: length");
        debug_assert!(
            {
                let (n, c, plane) = bits.geometry();
                *bits == SpikeBits::from_f32(&self.data, n, c, plane, bits.scale())
            },
            "with_spike_bits: bits differ from the data"
        );
        self.spike_bits = Some(bits);
        self
    }

    /// This spike tensor bit-packed as `n·c` planes of `plane` elements: the attached bits if
    /// their geometry is that, else packed now. `None` without a spike hint.
    ///
    /// # Panics
    /// If `n·c·plane` differs from the element count.
    pub fn packed_spikes(&self, n: usize, c: usize, plane: usize) -> Option<Arc<SpikeBits>> {
        let scale = self.spike_scale?;
        Some(match &self.spike_bits {
            Some(b) if b.geometry() == (n, c, plane) => Arc::clone(b),
            _ => Arc::new(SpikeBits::from_f32(&self.data, n, c, plane, scale)),
        })
    }

    /// Whoever may write the data also drops the hints, and the values get a new identity.
    fn mark_written(&mut self) {
        self.spike_scale = None;
        self.spike_bits = None;
        self.content_id = fresh_content_id();
    }

    /// An identity of the values: it changes whenever they may have changed (every mutable
    /// access), and a clone keeps it, so two tensors with the same id hold the same values.
    /// Lets a layer keep something derived from a parameter (a repacked weight) until the
    /// parameter changes. Never 0 for a tensor built by a constructor.
    pub fn content_id(&self) -> u64 {
        self.content_id
    }

    /// A copy made by all threads into a pooled buffer, hints, bits and content id included:
    /// a ResNet block's input and output gradient are the largest tensors of a step (134 MB
    /// at B = 64, T = 4), which `Clone` copies on one thread.
    pub fn parallel_clone(&self) -> Tensor {
        let mut data = crate::buffer_pool::overwritable(self.data.len());
        crate::kernels::elementwise::par_copy(&mut data, &self.data);
        Tensor {
            shape: self.shape.clone(),
            data,
            spike_scale: self.spike_scale,
            spike_bits: self.spike_bits.clone(),
            content_id: self.content_id,
        }
    }

    /// Sets every element to zero (keeps the allocation).
    pub fn fill_zero(&mut self) {
        self.mark_written();
        crate::kernels::elementwise::par_fill_zero(&mut self.data);
    }

    /// Largest absolute element-wise difference to `other` (shapes must match).
    pub fn max_abs_diff(&self, other: &Tensor) -> Result<f32> {
        if self.shape != other.shape {
            return Err(Error::shape(
                "max_abs_diff",
                format!("{:?}", self.shape),
                &other.shape,
            ));
        }
        Ok(self
            .data
            .iter()
            .zip(&other.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max))
    }
}

/// Inside an eval pass large buffers go back to [`crate::buffer_pool`] for the next output of
/// their size.
impl Drop for Tensor {
    fn drop(&mut self) {
        crate::buffer_pool::give_back(std::mem::take(&mut self.data));
    }
}

/// Formats a shape for error messages, e.g. `[64, 3, 32, 32]`.
pub fn shape_str(shape: &[usize]) -> String {
    format!("{shape:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndarray_round_trip_keeps_row_major_order() {
        let a = ndarray::Array::from_shape_vec((2, 3), vec![1., 2., 3., 4., 5., 6.])
            .unwrap()
            .into_dyn();
        let t = Tensor::from_array(a.t().to_owned());
        assert_eq!(t.shape(), &[3, 2]);
        assert_eq!(t.data(), &[1., 4., 2., 5., 3., 6.]);
        assert_eq!(t.view()[[2, 1]], 6.0);
    }

    #[test]
    fn reshape_checks_element_count() {
        let t = Tensor::zeros(&[2, 3]);
        assert!(t.clone().reshape(&[3, 2]).is_ok());
        assert!(matches!(
            t.reshape(&[4, 2]),
            Err(Error::ShapeMismatch { .. })
        ));
    }

    /// The attached bits are reused only for their own geometry, never change equality, and
    /// go with the hint.
    #[test]
    fn spike_bits_are_a_cache_of_the_data() {
        let spikes = || {
            Tensor::from_vec(&[1, 2, 3], vec![0.0, 2.0, 0.0, 2.0, 2.0, 0.0])
                .unwrap()
                .with_spike_scale(Some(2.0))
        };
        let bits = spikes().packed_spikes(1, 2, 3).unwrap();
        assert_eq!(bits.words(), &[0b010, 0b011]);
        let t = spikes().with_spike_bits(Arc::clone(&bits));
        assert!(Arc::ptr_eq(&t.packed_spikes(1, 2, 3).unwrap(), &bits));
        let flat = t.packed_spikes(1, 1, 6).unwrap();
        assert!(!Arc::ptr_eq(&flat, &bits));
        assert_eq!(flat.words(), &[0b011010]);
        assert_eq!(t, spikes());
        let mut written = t.clone();
        written.data_mut()[0] = 2.0;
        assert!(written.spike_bits().is_none());
        assert_eq!(written.packed_spikes(1, 2, 3), None);
        let rescaled = t.clone().with_spike_scale(Some(2.0));
        assert!(rescaled.spike_bits().is_some());
        assert!(t.with_spike_scale(None).spike_bits().is_none());
    }

    #[test]
    #[should_panic(expected = "with_spike_bits: scale")]
    fn bits_of_another_scale_are_refused() {
        let t = Tensor::from_vec(&[2], vec![0.0, 2.0])
            .unwrap()
            .with_spike_scale(Some(2.0));
        let bits = Arc::new(SpikeBits::from_f32(&[0.0, 1.0], 1, 1, 2, 1.0));
        let _ = t.with_spike_bits(bits);
    }

    #[test]
    fn content_id_changes_with_every_mutable_access_and_follows_clones() {
        let mut t = Tensor::from_vec(&[2], vec![1.0, 2.0]).unwrap();
        let id = t.content_id();
        assert_ne!(id, 0);
        assert_eq!(t.clone().content_id(), id);
        assert_eq!(t.clone().reshape(&[1, 2]).unwrap().content_id(), id);
        assert_ne!(
            Tensor::from_vec(&[2], vec![1.0, 2.0]).unwrap().content_id(),
            id
        );
        let _ = t.data_mut();
        let after_data = t.content_id();
        assert_ne!(after_data, id);
        let _ = t.view_mut();
        assert_ne!(t.content_id(), after_data);
        let before_fill = t.content_id();
        t.fill_zero();
        assert_ne!(t.content_id(), before_fill);
    }

    #[test]
    fn mutation_clears_spike_hint() {
        let mut t = Tensor::from_vec(&[3], vec![0.0, 2.0, 0.0])
            .unwrap()
            .with_spike_scale(Some(2.0));
        assert_eq!(t.spike_scale(), Some(2.0));
        t.data_mut()[0] = 1.0;
        assert_eq!(t.spike_scale(), None);
    }
}
