//! A trainable, timm-equivalent ViT/DeiT for candle that exposes every block's attention map,
//! with strict loading of timm and Hugging Face transformers safetensors checkpoints.
//!
//! ```no_run
//! let dev = candle_core::Device::Cpu;
//! let m = model::load(Some("augreg-base"), None, &model::HubOptions::from_env(), &dev)?;
//! let x = candle_core::Tensor::zeros((1, 3, 224, 224), candle_core::DType::F32, &dev)?;
//! let logits = m.vit.forward(&x)?;
//! # Ok::<(), model::ModelError>(())
//! ```

pub mod block;
pub mod config;
pub mod grads;
pub mod hub;
pub mod kernels;
pub mod ops;
pub mod variants;
pub mod vit;
pub mod weights;

pub use config::{PretrainedCfg, VitConfig};
pub use grads::{Grads, TrainForward};
pub use hub::{describe_source, load, HubOptions, LoadedModel, WeightsSource};
pub use variants::{variant, Variant, VARIANTS};
pub use vit::{expected_shapes, Mode, Params, Vit};
pub use weights::{save_model, save_params, Naming};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("unknown model `{name}`; known models: {known}")]
    UnknownModel { name: String, known: String },
    #[error("invalid model configuration: {0}")]
    Config(String),
    #[error("config file {path}: {msg}")]
    BadConfigFile { path: PathBuf, msg: String },
    #[error("weights file {path} {msg}")]
    Weights { path: PathBuf, msg: String },
    #[error("tensor `{name}` is missing from {origin}: the checkpoint does not match the architecture (wrong --model, or a truncated/foreign file)")]
    MissingTensor { name: String, origin: String },
    #[error("{origin} has {count} unexpected tensor(s), e.g. `{name}`: the checkpoint does not match the architecture (e.g. a distilled DeiT or a different model)")]
    UnexpectedTensor {
        name: String,
        count: usize,
        origin: String,
    },
    #[error(
        "tensor `{name}` in {origin} has shape {found:?}, the architecture expects {expected:?}"
    )]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
        origin: String,
    },
    #[error("input has shape {found:?}, the model expects {expected}")]
    InputShape { expected: String, found: Vec<usize> },
    #[error("weights not found: {0}")]
    WeightsNotFound(String),
    #[error("hub: {0}")]
    Hub(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// Picks the compute device: `cuda` needs the `cuda` feature and a GPU; `auto` takes the GPU
/// when there is one.
pub fn device(name: &str) -> Result<candle_core::Device> {
    select_device(name).map(|(d, _)| d)
}

/// [`device`], with a line for the user saying which device is used and, when `auto` falls
/// back to the CPU, why (a run that was meant for a GPU should say so at its first line).
pub fn select_device(name: &str) -> Result<(candle_core::Device, String)> {
    let no_cuda_build =
        "this build has no CUDA support (rebuild with `--features cuda` to use a GPU)";
    match name {
        "cpu" => Ok((candle_core::Device::Cpu, "cpu".into())),
        "cuda" => candle_core::Device::new_cuda(0)
            .map(|d| (d, "cuda:0".into()))
            .map_err(|e| {
                let why = if candle_core::utils::cuda_is_available() {
                    format!("no usable GPU: {e}")
                } else {
                    no_cuda_build.to_owned()
                };
                ModelError::Config(format!(
                    "--device cuda: {why}; or use --device cpu (or auto)"
                ))
            }),
        "auto" if !candle_core::utils::cuda_is_available() => Ok((
            candle_core::Device::Cpu,
            format!("cpu (--device auto: {no_cuda_build})"),
        )),
        "auto" => Ok(match candle_core::Device::new_cuda(0) {
            Ok(d) => (d, "cuda:0 (--device auto: a GPU was found)".into()),
            Err(e) => (
                candle_core::Device::Cpu,
                format!("cpu (--device auto: built with CUDA, but no usable GPU was found: {e})"),
            ),
        }),
        other => Err(ModelError::Config(format!(
            "unknown device `{other}` (cpu, cuda or auto)"
        ))),
    }
}

#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
#[cfg(any(test, feature = "test-support"))]
pub use test_support::{
    check_close, compare, compare_tensors, fixture_dir, load_fixture_model, max_abs, max_abs_diff,
    resolve_fixture_dir, test_device, Deviation, FIXTURE_FILES,
};

/// Tells the allocator to keep freed memory instead of returning it to the OS after 10 ms
/// (mimalloc's default "purge delay"). candle allocates and frees activation-sized buffers on
/// every op; handing them back made each training step fault in ~150k fresh pages (about 10 %
/// of a ViT-S step on 2 cores). Call it first thing in `main` of a binary whose global allocator is mimalloc.
pub fn keep_freed_memory() {
    // mi_option_purge_delay is the 16th entry (15) of mimalloc's mi_option_e in both the v2 and
    // v3 headers bundled with libmimalloc-sys 0.1.49 (pinned in the workspace).
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: sets a process-wide option; valid at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}
