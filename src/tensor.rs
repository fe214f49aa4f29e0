//! [`Tensor`]: a contiguous, row-major `f32` array with a shape.
//!
//! Activations are NCHW with the time axis folded into the batch axis (`N = T·B`, row
//! `n = t·B + b`), see `DESIGN.md`. Kernels work on the flat slice; `ndarray` views are available
//! at the API edge through [`Tensor::view`] and [`Tensor::from_array`].

use crate::error::{Error, Result};
use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, IxDyn};

/// A dense, contiguous, row-major `f32` tensor.
///
/// `spike_scale` is a hint set by spiking layers: when it is `Some(s)`, every element is exactly
/// `0.0` or `s` (TrSG emits `θ·S`, AS/RS-SG emit `S`), which lets consumers take spike-aware
/// paths. Any operation that changes values must clear it; shape-only operations keep it.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
    spike_scale: Option<f32>,
}

impl Tensor {
    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        Tensor {
            shape: shape.to_vec(),
            data: crate::buffer_pool::zeroed(shape.iter().product()),
            spike_scale: None,
        }
    }

    /// A tensor filled with `value`.
    pub fn full(shape: &[usize], value: f32) -> Self {
        Tensor {
            shape: shape.to_vec(),
            data: vec![value; shape.iter().product()],
            spike_scale: None,
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
        }
    }

    /// An `ndarray` view of the tensor.
    pub fn view(&self) -> ArrayViewD<'_, f32> {
        ArrayViewD::from_shape(IxDyn(&self.shape), &self.data)
            .expect("Tensor invariant: data.len() == product(shape)")
    }

    /// A mutable `ndarray` view of the tensor (clears the spike hint).
    pub fn view_mut(&mut self) -> ArrayViewMutD<'_, f32> {
        self.spike_scale = None;
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
        self.spike_scale = None;
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
        self.spike_scale = scale;
        self
    }

    /// Sets every element to zero (keeps the allocation).
    pub fn fill_zero(&mut self) {
        self.spike_scale = None;
        self.data.fill(0.0);
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
