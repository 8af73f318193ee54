//! Relevance maps of Vision Transformers and the RobustViT objective that optimises them
//! (Chefer, Schwartz & Wolf, NeurIPS 2022), on top of the trainable [`model::Vit`].
//!
//! * [`relevance_map`] / [`relevance_parts`]: the class-specific relevance map of a batch
//!   (gradient-weighted attention, rolled out through all blocks, upsampled, min-max normalised).
//! * [`loss_and_grads`] / [`eval_loss`]: the background / foreground / classification loss with
//!   one forward pass, and the gradient of every parameter (the optimizer that applies it lives
//!   with training, in the `train` crate).
//! * [`explainers`]: baselines (raw attention, attention rollout, GradCAM) with the same output.
//! * [`render`]: tensors to pixels (denormalised images, maps on the host) for `figures`.
//!
//! ```no_run
//! # fn main() -> Result<(), relevance::RelevanceError> {
//! let dev = candle_core::Device::Cpu;
//! // A folder with model.safetensors and config.json (or a paper model's name, from the hub).
//! let hub = model::HubOptions::from_env();
//! let m = model::load(None, Some("my-checkpoint"), &hub, &dev)?;
//! let side = m.vit.config().img_size;
//! let x = candle_core::Tensor::zeros((1, 3, side, side), candle_core::DType::F32, &dev)?;
//! let r = relevance::relevance_map(&m.vit, &x, None)?; // the predicted class
//! assert_eq!(r.map.dims(), &[1, 1, side, side]);
//! # Ok(()) }
//! ```

pub mod explainers;
pub mod loss;
pub mod map;
pub mod render;
pub mod upsample;

pub use explainers::{explain, Explainer};
pub use loss::{
    eval_loss, loss_and_grads, loss_given_grads, loss_terms, reverse_mask, EvalOutput,
    LossAndGrads, LossConfig, LossTensors, Losses, MaskMode,
};
pub use map::{
    attention_grads, cam, min_max_normalise, min_max_normalise_at, relevance_map, relevance_parts,
    rollout_cls, rollout_full, Normalised, Relevance, RelevanceParts,
};
pub use upsample::{interpolation_matrix, Upsampler};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum RelevanceError {
    #[error(transparent)]
    Model(#[from] model::ModelError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(
        "masks have shape {mask:?} but the images have shape {image:?}: masks must be \
         (B, 1, H, W) with the batch size and spatial size of the images"
    )]
    MaskShape { mask: Vec<usize>, image: Vec<usize> },
    #[error("{given} target class(es) given for a batch of {batch} image(s)")]
    TargetCount { given: usize, batch: usize },
    #[error("target class {class} of image {index} is out of range: the model has {num_classes} classes")]
    TargetRange {
        index: usize,
        class: u32,
        num_classes: usize,
    },
    #[error("no gradient reached `{0}`: a backward pass was cut (an op without backward?)")]
    MissingGradient(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
}

pub type Result<T, E = RelevanceError> = std::result::Result<T, E>;
