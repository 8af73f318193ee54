//! Training-path and inference operations on tensors, with hand-written backward passes where
//! candle's own are slow.
//!
//! * [`layers`]: linear, LayerNorm, softmax and GELU as one graph node each (candle composes
//!   softmax / layer norm / GELU out of 5-10 elementwise ops, and its generic backward
//!   materialises a zero-filled buffer and an add for every gradient edge), with their
//!   graph-free `*_value` forms for inference;
//! * [`attention`]: multi-head attention straight from the fused qkv projection, as two graph
//!   nodes (the map, then the heads' outputs) so that the attention map stays a tensor of its
//!   own, and the graph-free inference kernel.

use candle_core::{DType, Storage, Tensor};

pub mod attention;
pub mod layers;

pub use attention::{attention_apply, attention_probs, attention_value, fused_attention_available};
pub use layers::{
    gelu_erf, gelu_erf_value, layer_norm, layer_norm_value, linear, linear_value, softmax,
    softmax_value, sum_rows,
};

type Result<T> = candle_core::Result<T>;

/// Runs `f` on the f32 data of a CPU tensor, read in place when it is contiguous (copied into
/// a contiguous layout otherwise).
pub fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cpu(c) => {
            let all = c.as_slice::<f32>()?;
            let o = l.start_offset();
            Ok(f(&all[o..o + l.shape().elem_count()]))
        }
        _ => candle_core::bail!("expected a CPU tensor"),
    }
}

pub(crate) fn cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}
