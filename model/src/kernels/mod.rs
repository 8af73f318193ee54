//! CPU kernels on plain f32 slices, shared by the fused ops and the inference path.
//!
//! * [`simd`]: the `vectorized!` builds (AVX-512, AVX2+FMA, baseline) and the scalar maths
//!   (exp, erf, lane-parallel sums) the other kernels are written in. candle's kernels call the
//!   scalar `libm` erf / exp per element, which was 13 % of a ViT-S forward.
//! * [`elementwise`]: GELU and softmax rows, forward and backward.
//! * [`layer_norm`]: LayerNorm rows, forward and backward.
//! * [`gemm`]: the one GEMM entry point ([`gemm_strided`]) and the linear layer on it, with its
//!   bias (and, at inference, the residual) written into the output before the product is
//!   accumulated onto it, instead of a second pass and a second buffer per layer.

use rayon::prelude::*;
use std::mem::MaybeUninit;

pub mod simd;

pub mod elementwise;
pub mod gemm;
pub mod layer_norm;

pub use elementwise::{gelu, gelu_backward, softmax_backward_row, softmax_rows};
pub use gemm::{gemm_strided, linear_backward, linear_forward};
pub use layer_norm::{layer_norm_backward, layer_norm_forward};
pub use simd::{erf, exp};

/// A vector of `n` floats that `fill` writes, without zero-filling it first (`vec![0.0; n]`
/// is a memset over every activation: 5 % of a ViT-S forward).
///
/// # Safety
/// `fill` must write every one of the `n` elements.
pub unsafe fn written_by(n: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v: Vec<MaybeUninit<f32>> = Vec::with_capacity(n);
    // SAFETY: MaybeUninit elements need no initialisation.
    unsafe { v.set_len(n) };
    fill(&mut v);
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: same allocation, length and capacity; `fill` initialised every element (the
    // caller's promise) and MaybeUninit<f32> has the layout of f32.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<f32>(), v.len(), v.capacity()) }
}

/// An input gradient and, when they were asked for, the (weight, bias) gradients.
pub type InputAndParamGrads = (Vec<f32>, Option<(Vec<f32>, Vec<f32>)>);

/// Rows per partial sum in the parameter-gradient reductions. Fixed, not derived from the
/// thread count, and the partials are added in order: the result is then the same bits on any
/// machine and any run, which a resumed run needs to continue exactly.
pub const REDUCE_ROWS: usize = 64;

/// Adds per-block partial sums in block order.
pub fn sum_in_order(partials: Vec<Vec<f32>>, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    for p in partials {
        out.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
    }
    out
}

/// Column sums of a row-major (rows, cols) matrix, in parallel blocks of [`REDUCE_ROWS`] rows.
pub fn column_sums(g: &[f32], cols: usize) -> Vec<f32> {
    let partials: Vec<Vec<f32>> = g
        .par_chunks(REDUCE_ROWS * cols)
        .map(|chunk| {
            let mut acc = vec![0f32; cols];
            for row in chunk.chunks_exact(cols) {
                acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
            }
            acc
        })
        .collect();
    sum_in_order(partials, cols)
}

/// `len` deterministic test values centred on zero: ((i·step mod period) − period/2) / scale.
#[cfg(test)]
pub(crate) fn ramp(len: usize, step: usize, period: usize, scale: f32) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * step % period) as f32 - (period / 2) as f32) / scale)
        .collect()
}
