//! Parallel batch loader: decode + preprocess on a rayon pool, a bounded queue of ready batches
//! so that the model never waits, and a deterministic order whatever the thread timing.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::datasets::EvalSample;
use crate::error::{panic_message, DataError, Result};
use crate::preprocess::{decode_rgb, EvalTransform};

/// One preprocessed sample.
#[derive(Debug, Clone)]
pub struct Item {
    /// CHW f32, `3 * height * width` values.
    pub image: Vec<f32>,
    /// HW f32 mask, when the source has masks.
    pub mask: Option<Vec<f32>>,
    pub height: u32,
    pub width: u32,
    /// Ground truth / paper target (ImageNet-1k index).
    pub label: u32,
    /// All accepted ImageNet-1k indices (ObjectNet may have several).
    pub targets: Vec<u32>,
    pub path: PathBuf,
}

/// Anything the loader can draw samples from.
pub trait SampleSource: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Load and preprocess sample `index`; an error skips the sample (and is reported).
    fn load(&self, index: usize) -> Result<Item>;
    /// File name to report when `load` fails.
    fn path(&self, index: usize) -> PathBuf;
}

/// Evaluation images with one transform.
#[derive(Debug, Clone)]
pub struct EvalSource {
    pub samples: Vec<EvalSample>,
    pub transform: EvalTransform,
}

impl SampleSource for EvalSource {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn load(&self, index: usize) -> Result<Item> {
        let s = &self.samples[index];
        let image = self.transform.load(&s.path)?;
        Ok(Item {
            image,
            mask: None,
            height: self.transform.crop,
            width: self.transform.crop,
            label: s.paper_target(),
            targets: s.targets.clone(),
            path: s.path.clone(),
        })
    }

    fn path(&self, index: usize) -> PathBuf {
        self.samples[index].path.clone()
    }
}

/// A batch of preprocessed samples, in the order requested.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Running number of this batch.
    pub number: usize,
    /// (B, 3, H, W) f32 on the CPU.
    pub images: Tensor,
    /// (B, 1, H, W) f32 masks for sources that have them.
    pub masks: Option<Tensor>,
    pub labels: Vec<u32>,
    pub targets: Vec<Vec<u32>>,
    pub paths: Vec<PathBuf>,
    /// Source indices of the samples in this batch.
    pub indices: Vec<usize>,
    /// Samples that failed to load since the previous batch, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Where the loader stands, passed to the progress callback after every batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub batches: usize,
    pub images_done: usize,
    pub images_total: usize,
    pub skipped: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderOptions {
    pub batch_size: usize,
    /// Decode threads; 0 = one per core.
    pub threads: usize,
    /// Ready batches kept ahead of the consumer.
    pub prefetch: usize,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        Self {
            batch_size: 64,
            threads: 0,
            prefetch: 2,
        }
    }
}

pub type ProgressFn = Box<dyn Fn(&Progress) + Send>;

/// Iterator over batches, produced on a background thread.
pub struct Loader {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    total: usize,
}

/// The order of an epoch: 0..n shuffled by ChaCha8 seeded with `seed ^ epoch * φ·2⁶⁴`. The
/// training runs' order: changing it changes every trained model.
pub fn shuffled_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    v.shuffle(&mut rng);
    v
}

fn make_batch(
    number: usize,
    items: Vec<(usize, Item)>,
    skipped: Vec<(PathBuf, String)>,
) -> Result<Batch> {
    let b = items.len();
    let (h, w) = items
        .first()
        .map(|(_, it)| (it.height as usize, it.width as usize))
        .unwrap_or((0, 0));
    let mut images = Vec::with_capacity(b * 3 * h * w);
    let has_masks = items
        .first()
        .map(|(_, it)| it.mask.is_some())
        .unwrap_or(false);
    let mut masks = Vec::with_capacity(if has_masks { b * h * w } else { 0 });
    let mut labels = Vec::with_capacity(b);
    let mut targets = Vec::with_capacity(b);
    let mut paths = Vec::with_capacity(b);
    let mut indices = Vec::with_capacity(b);
    for (i, it) in items {
        if (it.height as usize, it.width as usize) != (h, w) || it.image.len() != 3 * h * w {
            return Err(DataError::Invalid(format!(
                "{}: sample size {}x{} differs from the batch's {w}x{h}",
                it.path.display(),
                it.width,
                it.height
            )));
        }
        images.extend_from_slice(&it.image);
        if let Some(m) = &it.mask {
            masks.extend_from_slice(m);
        }
        labels.push(it.label);
        targets.push(it.targets);
        paths.push(it.path);
        indices.push(i);
    }
    let images = Tensor::from_vec(images, (b, 3, h, w), &Device::Cpu)?;
    let masks = if has_masks {
        Some(Tensor::from_vec(masks, (b, 1, h, w), &Device::Cpu)?)
    } else {
        None
    };
    Ok(Batch {
        number,
        images,
        masks,
        labels,
        targets,
        paths,
        indices,
        skipped,
    })
}

impl Loader {
    /// Start loading `order` (source indices) in batches. Failed samples are skipped and listed
    /// in the next batch's `skipped`; a trailing batch with zero images carries the last ones.
    pub fn new(
        source: Arc<dyn SampleSource>,
        order: Vec<usize>,
        opts: LoaderOptions,
        on_progress: Option<ProgressFn>,
    ) -> Result<Self> {
        if opts.batch_size == 0 {
            return Err(DataError::Invalid("batch size must be at least 1".into()));
        }
        if let Some(&bad) = order.iter().find(|&&i| i >= source.len()) {
            return Err(DataError::Invalid(format!(
                "sample index {bad} out of range ({} samples)",
                source.len()
            )));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.threads)
            .thread_name(|i| format!("data-loader-{i}"))
            .build()
            .map_err(|e| DataError::Invalid(format!("cannot start loader threads: {e}")))?;
        let (tx, rx) = sync_channel(opts.prefetch.max(1) - 1);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let total = order.len();
        let handle = std::thread::Builder::new()
            .name("data-loader".into())
            .spawn(move || {
                let mut progress = Progress {
                    images_total: total,
                    ..Default::default()
                };
                let mut pending_skips = Vec::new();
                let mut number = 0;
                let chunks: Vec<&[usize]> = order.chunks(opts.batch_size).collect();
                let n_chunks = chunks.len();
                for (ci, chunk) in chunks.into_iter().enumerate() {
                    if stop2.load(Ordering::Relaxed) {
                        return;
                    }
                    // A panic in one image's decode or transform is caught here: it would
                    // otherwise end this thread and, with it, the batches (silently).
                    let load = |i: usize| {
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| source.load(i)))
                            .map_err(|p| DataError::Panicked {
                                path: source.path(i),
                                cause: panic_message(p.as_ref()),
                            })
                    };
                    let results: Vec<(usize, std::result::Result<Result<Item>, DataError>)> =
                        pool.install(|| chunk.par_iter().map(|&i| (i, load(i))).collect());
                    let mut items = Vec::with_capacity(results.len());
                    let mut panicked = None;
                    for (i, r) in results {
                        match r {
                            Ok(Ok(it)) => items.push((i, it)),
                            Ok(Err(e)) => pending_skips.push((source.path(i), e.to_string())),
                            Err(p) => {
                                panicked.get_or_insert(p);
                            }
                        }
                    }
                    progress.images_done += chunk.len();
                    if let Some(p) = panicked {
                        // Not a bad file to skip: the batch fails, the consumer decides.
                        number += 1;
                        if tx.send(Err(p)).is_err() {
                            return;
                        }
                        continue;
                    }
                    let last = ci + 1 == n_chunks;
                    if items.is_empty() && !last {
                        continue;
                    }
                    progress.skipped += pending_skips.len();
                    progress.batches += 1;
                    let batch = make_batch(number, items, std::mem::take(&mut pending_skips));
                    number += 1;
                    if let Some(cb) = &on_progress {
                        cb(&progress);
                    }
                    if tx.send(batch).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| DataError::Invalid(format!("cannot start the loader thread: {e}")))?;
        Ok(Self {
            rx: Some(rx),
            handle: Some(handle),
            stop,
            total,
        })
    }

    /// Number of samples requested.
    pub fn total(&self) -> usize {
        self.total
    }
}

impl Iterator for Loader {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.rx.as_ref()?.recv() {
            Ok(b) => Some(b),
            Err(_) => {
                // The producer is gone: finished, or died. A death is an error, never an end.
                self.rx = None;
                let h = self.handle.take()?;
                match h.join() {
                    Ok(()) => None,
                    Err(p) => Some(Err(DataError::Panicked {
                        path: PathBuf::from("the data loader thread"),
                        cause: panic_message(p.as_ref()),
                    })),
                }
            }
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receiver unblocks a producer waiting on a full queue.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Loads the samples `indices` of `source` as one batch, in parallel on the current rayon
/// pool and without a background thread; unlike [`Loader`], a sample that fails to load fails
/// the batch.
pub fn load_batch(source: &dyn SampleSource, indices: &[usize]) -> Result<Batch> {
    if let Some(&bad) = indices.iter().find(|&&i| i >= source.len()) {
        return Err(DataError::Invalid(format!(
            "sample index {bad} out of range ({} samples)",
            source.len()
        )));
    }
    let items = indices
        .par_iter()
        .map(|&i| source.load(i).map(|it| (i, it)))
        .collect::<Result<Vec<_>>>()?;
    make_batch(0, items, Vec::new())
}

/// Decode + preprocess one evaluation image (convenience for single images and tests).
pub fn load_eval_image(path: &std::path::Path, t: &EvalTransform) -> Result<Tensor> {
    let v = t.apply(&decode_rgb(path)?);
    Ok(Tensor::from_vec(
        v,
        (1, 3, t.crop as usize, t.crop as usize),
        &Device::Cpu,
    )?)
}
