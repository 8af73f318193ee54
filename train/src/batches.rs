//! A run's settings mapped onto `data`'s training source and loader: the epoch's batches
//! (shuffled, augmented, decoded on the CPU one batch ahead), the validation batches and the
//! fixed strip images; `on_device` moves a batch's tensors to the model's device.

use std::sync::Arc;

use anyhow::{bail, Result};
use candle_core::Device;
use data::loader::{shuffled_order, Loader, LoaderOptions};
use data::{Batch, PairTransform, TrainExample, TrainSource};

use crate::config::{TrainConfig, Transform};

/// `examples` with the run's transform for a model of `img_size` pixels; `augment` as in
/// [`TrainSource::augment`].
fn source(
    cfg: &TrainConfig,
    examples: &[TrainExample],
    img_size: usize,
    augment: Option<(u64, u64)>,
) -> TrainSource {
    TrainSource {
        examples: examples.to_vec(),
        transform: match cfg.transform {
            Transform::None => PairTransform::Plain,
            Transform::Paper => PairTransform::Paper,
        },
        norm: data::Normalization {
            mean: cfg.mean,
            std: cfg.std,
        },
        crop: img_size as u32,
        augment,
    }
}

/// Batches of `source` in `order`, decoded on the CPU one batch ahead of the consumer (so
/// that a GPU does not wait for JPEG and mask decoding).
fn batches(source: TrainSource, order: Vec<usize>, batch_size: usize) -> Result<Loader> {
    let opts = LoaderOptions {
        batch_size,
        threads: 0,
        prefetch: 2,
    };
    Ok(Loader::new(Arc::new(source), order, opts, None)?)
}

/// The training batches of `epoch`: the examples shuffled by (seed, epoch), at most
/// `max_batches` of them, each image with the crop and flip of (seed, epoch, example index).
pub fn epoch_batches(
    cfg: &TrainConfig,
    examples: &[TrainExample],
    img_size: usize,
    epoch: usize,
    max_batches: usize,
) -> Result<Loader> {
    let mut order = shuffled_order(examples.len(), cfg.seed, epoch as u64);
    let batch_size = cfg.batch_size;
    order.truncate(max_batches.saturating_mul(batch_size));
    let source = source(cfg, examples, img_size, Some((cfg.seed, epoch as u64)));
    batches(source, order, batch_size)
}

/// The validation batches of `examples`, in order.
pub fn val_batches(
    cfg: &TrainConfig,
    examples: &[TrainExample],
    img_size: usize,
) -> Result<Loader> {
    let source = source(cfg, examples, img_size, None);
    batches(source, (0..examples.len()).collect(), cfg.val_batch_size)
}

/// A loaded batch with its tensors on `device`. Training stops at an example that cannot be
/// loaded rather than go on without it.
pub fn on_device(batch: data::Result<Batch>, device: &Device) -> Result<Batch> {
    let batch = batch?;
    if let Some((path, why)) = batch.skipped.first() {
        bail!("cannot load {}: {why}", path.display());
    }
    Ok(Batch {
        images: batch.images.to_device(device)?,
        masks: batch.masks.map(|m| m.to_device(device)).transpose()?,
        ..batch
    })
}

/// All of `examples` in one batch with the validation transform, on `device`.
pub fn load_all(
    cfg: &TrainConfig,
    examples: &[TrainExample],
    img_size: usize,
    device: &Device,
) -> Result<Batch> {
    let source = source(cfg, examples, img_size, None);
    let indices: Vec<usize> = (0..examples.len()).collect();
    on_device(data::loader::load_batch(&source, &indices), device)
}
