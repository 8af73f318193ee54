//! The epoch loop: one forward per step, validation, checkpoints, strips, resume.

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

use data::imagenet_s::{ImageNetS, ImageNetSSplit, SegSample, SplitOptions};
use data::preprocess::{to_chw, Normalization, Plane};
use model::Vit;
use relevance::{AdamW, AdamWConfig, LossConfig, MaskMode};

use crate::config::{Objective, Schedule, TrainConfig, Transform};
use crate::run_dir::{Metrics, MetricsRow, RunDir, RunState, ValFigures};

/// One training or validation example with its absolute paths.
#[derive(Debug, Clone)]
pub struct Example {
    pub image: PathBuf,
    pub mask: Option<PathBuf>,
    pub label: u32,
}

/// A decoded, transformed batch.
pub struct Batch {
    pub images: Tensor,
    pub masks: Option<Tensor>,
    pub labels: Vec<u32>,
}

impl Batch {
    /// The same batch with its tensors on `device`.
    pub fn to_device(self, device: &Device) -> Result<Self> {
        Ok(Self {
            images: self.images.to_device(device)?,
            masks: self.masks.map(|m| m.to_device(device)).transpose()?,
            labels: self.labels,
        })
    }
}

fn seg_examples(root: &ImageNetS, samples: &[SegSample]) -> Vec<Example> {
    samples
        .iter()
        .map(|s| Example {
            image: root.images.join(&s.image),
            mask: Some(root.masks.join(&s.mask)),
            label: s.label,
        })
        .collect()
}

/// Every image of an ImageNet-style class folder (`<wnid>/<file>`), labelled by its wnid.
pub fn folder_examples(root: &Path, limit_classes: Option<usize>) -> Result<Vec<Example>> {
    let mut classes: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| {
            format!(
                "image folder {} cannot be read (expected <wnid>/<image> class folders)",
                root.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    if let Some(k) = limit_classes {
        classes.truncate(k);
    }
    let mut out = Vec::new();
    for dir in classes {
        let wnid = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(label) = data::labels::wnid_to_index(&wnid) else {
            bail!(
                "{} is not an ImageNet class folder (unknown wnid {wnid})",
                dir.display()
            );
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| data::check::has_image_extension(p))
            .collect();
        files.sort();
        out.extend(files.into_iter().map(|image| Example {
            image,
            mask: None,
            label: label as u32,
        }));
    }
    if out.is_empty() {
        bail!(
            "image folder {} holds no images in <wnid>/ class folders",
            root.display()
        );
    }
    Ok(out)
}

/// The training and validation examples of a run, and the split file that fixes them.
pub struct RunData {
    pub train: Vec<Example>,
    pub val: Vec<Example>,
}

fn split_options(cfg: &TrainConfig, train_classes: usize) -> SplitOptions {
    SplitOptions {
        num_train_classes: train_classes,
        train_per_class: cfg.train_per_class,
        val_per_class: cfg.val_per_class,
        seed: None,
    }
}

/// `<wnid>/<name>.<ext>` as a split file must name it: relative, no `..`, a file name with a stem.
/// Anything else would be joined onto a data root and point outside it, or at a folder.
fn split_entry_stem(rel: &str) -> Option<&str> {
    let p = Path::new(rel);
    let plain = p.components().count() >= 2
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain {
        return None;
    }
    p.file_stem()?.to_str().filter(|s| !s.is_empty())
}

/// Checks every entry of a split read from `path` against the data it will be read from.
fn check_split(
    split: &ImageNetSSplit,
    path: &Path,
    train_ds: &ImageNetS,
    val_ds: &ImageNetS,
) -> Result<()> {
    if split.train.is_empty() {
        bail!(
            "split file {} has no training entries: nothing would be trained (delete it to build a new split, or give another --split-file)",
            path.display()
        );
    }
    let sets = [(&split.train, train_ds), (&split.val, val_ds)];
    for (entries, ds) in sets {
        for smp in entries.iter() {
            let (Some(stem), Some(_)) = (split_entry_stem(&smp.mask), split_entry_stem(&smp.image))
            else {
                bail!(
                    "split file {} has an entry with mask {:?} and image {:?}: both must be <wnid>/<file> paths inside the data folders (fix or delete the split file)",
                    path.display(),
                    smp.mask,
                    smp.image
                );
            };
            if ds.image_for(&smp.wnid, stem).is_none() || !ds.masks.join(&smp.mask).is_file() {
                bail!(
                    "split file {} names {} / {} which {} / {} does not have: the split disagrees with the data (wrong folders, or delete the split file to rebuild it)",
                    path.display(), smp.image, smp.mask, ds.images.display(), ds.masks.display()
                );
            }
        }
    }
    Ok(())
}

/// Reads the split from `split.json` in the run folder (or `--split-file`), or builds it
/// and writes it there. A split that names files the data does not have is an error.
pub fn prepare_data(cfg: &TrainConfig, run: &RunDir) -> Result<RunData> {
    let split_path = cfg
        .split_file
        .clone()
        .unwrap_or_else(|| run.file("split.json"));
    let (data, new_split) = resolve_data(cfg, &split_path, true)?;
    if let Some(s) = new_split {
        s.save(&split_path)?;
    }
    Ok(data)
}

/// Creates the folder of a new run once everything it depends on has been checked (settings,
/// data, split), so that a refused command leaves nothing that a corrected one would have to
/// `--force` over. Writes the split (when built here) and `config.json`.
pub fn new_run(cfg: &TrainConfig, out: &Path, force: bool) -> Result<RunDir> {
    cfg.validate()?;
    loss_config(cfg)?;
    RunDir::ensure_free(out, force)?;
    let split_path = cfg
        .split_file
        .clone()
        .unwrap_or_else(|| out.join("split.json"));
    // --force clears the run's own split: it is rebuilt for the new options.
    let read_existing = cfg.split_file.is_some() || !force;
    let (_, new_split) = resolve_data(cfg, &split_path, read_existing)?;
    let run = RunDir::create(out, force)?;
    if let Some(s) = new_split {
        s.save(&split_path)?;
    }
    run.write_config(cfg)?;
    Ok(run)
}

/// The examples of a run and, when the split was built rather than read, the split to write
/// to `split_path`. Nothing is written here.
fn resolve_data(
    cfg: &TrainConfig,
    split_path: &Path,
    read_existing: bool,
) -> Result<(RunData, Option<ImageNetSSplit>)> {
    if let Some(folder) = &cfg.train_folder {
        let train = folder_examples(folder, cfg.limit_classes)?;
        let val = match &cfg.val_folder {
            Some(v) => folder_examples(v, cfg.limit_classes)?,
            None => Vec::new(),
        };
        return Ok((RunData { train, val }, None));
    }
    let (Some(masks), Some(images)) = (&cfg.imagenet_s, &cfg.imagenet) else {
        bail!("give --imagenet-s (ImageNet-S919 train-semi-segmentation) and --imagenet (ImageNet train images), or --train-folder");
    };
    let ds = ImageNetS::new(masks, images);
    let val_ds = match (&cfg.val_imagenet_s, &cfg.val_imagenet) {
        (Some(m), Some(i)) => Some(ImageNetS::new(m, i)),
        (None, None) => None,
        _ => bail!("--val-imagenet-s and --val-imagenet go together"),
    };
    let val_root = val_ds.as_ref().unwrap_or(&ds);
    if read_existing && split_path.exists() {
        let s = ImageNetSSplit::load(split_path)?;
        check_split(&s, split_path, &ds, val_root)?;
        let data = RunData {
            train: seg_examples(&ds, &s.train),
            val: seg_examples(val_root, &s.val),
        };
        return Ok((data, None));
    }
    let mut train_classes = cfg.train_classes;
    if let Some(k) = cfg.limit_classes {
        train_classes = train_classes.min(k);
    }
    let (mut s, report) = ds.build_split(&split_options(
        cfg,
        if val_ds.is_some() {
            usize::MAX
        } else {
            train_classes
        },
    ))?;
    if report.num_problems() > 0 {
        eprintln!("{report}");
    }
    if let Some(k) = cfg.limit_classes {
        let keep: Vec<String> = s
            .train_classes()
            .into_iter()
            .take(k)
            .map(String::from)
            .collect();
        s.train.retain(|x| keep.contains(&x.wnid));
        s.val.truncate(k.max(1) * cfg.val_per_class.max(1));
    }
    if let Some(v) = &val_ds {
        let (vs, report) = v.build_split(&split_options(cfg, 0))?;
        if report.num_problems() > 0 {
            eprintln!("{report}");
        }
        s.val = vs.val;
    }
    if s.train.is_empty() {
        bail!(
            "no usable (image, mask) pair found under {} / {}",
            ds.masks.display(),
            ds.images.display()
        );
    }
    let data = RunData {
        train: seg_examples(&ds, &s.train),
        val: seg_examples(val_root, &s.val),
    };
    Ok((data, Some(s)))
}

/// One decoded example: CHW pixels, the mask plane if any, the label.
type Prepared = (Vec<f32>, Option<Vec<f32>>, u32);

/// Decodes and transforms a batch in parallel; the random crop and flip of example `i` in
/// `epoch` depend only on (seed, epoch, i), so a resumed run sees the same pixels.
pub fn load_batch(
    examples: &[(usize, &Example)],
    cfg: &TrainConfig,
    train: bool,
    epoch: usize,
    img_size: usize,
    device: &Device,
) -> Result<Batch> {
    let crop = img_size as u32;
    let norm = Normalization {
        mean: cfg.mean,
        std: cfg.std,
    };
    let items: Vec<Prepared> = examples
        .par_iter()
        .map(|(idx, ex)| -> Result<_> {
            let img = data::preprocess::decode_rgb(&ex.image)?;
            let mask = match &ex.mask {
                Some(m) => Some(data::imagenet_s::decode_mask(m)?.binary),
                None => None,
            };
            let (x, m): (Vec<f32>, Option<Plane>) = match (cfg.transform, mask) {
                (Transform::None, m) => (to_chw(&img, &norm), m),
                (Transform::Paper, Some(m)) if train => {
                    let mut rng = data::imagenet_s::sample_rng(cfg.seed, epoch as u64, *idx as u64);
                    let (x, m) =
                        data::imagenet_s::train_transform_sized(&img, &m, &mut rng, &norm, crop);
                    (x, Some(m))
                }
                (Transform::Paper, Some(m)) => {
                    let (x, m) = data::imagenet_s::val_transform_sized(&img, &m, &norm, crop);
                    (x, Some(m))
                }
                (Transform::Paper, None) => {
                    let t = data::preprocess::EvalTransform {
                        norm,
                        resize: data::imagenet_s::resize_for_crop(crop),
                        crop,
                        ..data::preprocess::EvalTransform::PAPER
                    };
                    (t.apply(&img), None)
                }
            };
            Ok((x, m.map(|p| p.data), ex.label))
        })
        .collect::<Result<_>>()?;
    let b = items.len();
    let s = ((items[0].0.len() / 3) as f64).sqrt() as usize;
    let mut xs = Vec::with_capacity(b * 3 * s * s);
    let mut ms = Vec::with_capacity(b * s * s);
    let mut labels = Vec::with_capacity(b);
    let has_masks = items.iter().all(|i| i.1.is_some());
    for (x, m, l) in items {
        xs.extend(x);
        if let Some(m) = m {
            ms.extend(m);
        }
        labels.push(l);
    }
    let images = Tensor::from_vec(xs, (b, 3, s, s), device)?;
    let masks = if has_masks {
        Some(Tensor::from_vec(ms, (b, 1, s, s), device)?)
    } else {
        None
    };
    Ok(Batch {
        images,
        masks,
        labels,
    })
}

/// Runs `step` on the batches of `chunks` in order while the next one is decoded on a second
/// thread (one batch ahead), so that a GPU does not wait for JPEG and mask decoding. `load`
/// builds each batch on the CPU; `step` gets it with its tensors on `device`. The first error,
/// from either side, stops both and is returned.
fn prefetched<'a>(
    chunks: &[&[(usize, &'a Example)]],
    load: impl Fn(&[(usize, &'a Example)]) -> Result<Batch> + Send,
    device: &Device,
    mut step: impl FnMut(Batch) -> Result<()>,
) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Batch>>(1);
    std::thread::scope(|scope| {
        let producer = std::thread::Builder::new()
            .name("batch-prefetch".into())
            .spawn_scoped(scope, move || {
                for chunk in chunks {
                    let batch = load(chunk);
                    let failed = batch.is_err();
                    // A closed channel means the consumer stopped early.
                    if tx.send(batch).is_err() || failed {
                        return;
                    }
                }
            })
            .context("cannot start the batch prefetch thread")?;
        let result = (|| -> Result<()> {
            for _ in chunks {
                let batch = rx
                    .recv()
                    .context("the batch prefetch thread stopped unexpectedly")??;
                step(batch.to_device(device)?)?;
            }
            Ok(())
        })();
        // Unblocks the producer if the loop stopped early, then waits for it.
        drop(rx);
        if producer.join().is_err() {
            bail!("the batch prefetch thread panicked");
        }
        result
    })
}

/// PyTorch's `OneCycleLR` defaults as the embedded benchmark's design uses them: 10 % warm-up,
/// cosine annealing in both phases, and Adam's β₁ cycled against the learning rate
/// (`cycle_momentum=True`): high momentum while the rate is low and the reverse.
pub const ONECYCLE_PCT_START: f64 = 0.1;
pub const ONECYCLE_DIV_FACTOR: f64 = 25.0;
pub const ONECYCLE_FINAL_DIV_FACTOR: f64 = 1e4;
pub const ONECYCLE_BASE_MOMENTUM: f64 = 0.85;
pub const ONECYCLE_MAX_MOMENTUM: f64 = 0.95;

/// Learning rate and β₁ of step `step` (from 0) of a `total_steps`-step one-cycle run peaking
/// at `max_lr`, by PyTorch's `OneCycleLR` formulas: phase 1 ends at step
/// `pct_start·total − 1` and goes lr `max_lr/div_factor → max_lr`, β₁ `0.95 → 0.85`; phase 2
/// ends at step `total − 1` and goes lr `max_lr → max_lr/(div_factor·final_div_factor)`,
/// β₁ `0.85 → 0.95`; both with `end + (start − end)/2·(1 + cos(π·pct))`.
pub fn one_cycle(max_lr: f64, step: usize, total_steps: usize) -> (f64, f64) {
    let initial = max_lr / ONECYCLE_DIV_FACTOR;
    let min = initial / ONECYCLE_FINAL_DIV_FACTOR;
    let (lo_m, hi_m) = (ONECYCLE_BASE_MOMENTUM, ONECYCLE_MAX_MOMENTUM);
    let warm_end = ONECYCLE_PCT_START * total_steps as f64 - 1.0;
    let last = total_steps as f64 - 1.0;
    let anneal =
        |a: f64, b: f64, pct: f64| b + (a - b) / 2.0 * (1.0 + (std::f64::consts::PI * pct).cos());
    let s = step as f64;
    if s <= warm_end {
        // PyTorch divides by warm_end here; a warm-up shorter than one step starts at the peak.
        let pct = if warm_end > 0.0 { s / warm_end } else { 1.0 };
        (anneal(initial, max_lr, pct), anneal(hi_m, lo_m, pct))
    } else {
        let pct = ((s - warm_end) / (last - warm_end).max(1e-9)).min(1.0);
        (anneal(max_lr, min, pct), anneal(lo_m, hi_m, pct))
    }
}

/// Learning rate for (epoch, step within the run).
pub fn learning_rate(cfg: &TrainConfig, epoch: usize, step: usize, total_steps: usize) -> f64 {
    match cfg.schedule {
        Schedule::Constant => cfg.lr,
        Schedule::Step => {
            cfg.lr
                * cfg
                    .lr_decay
                    .powi((epoch / cfg.lr_decay_every.max(1)) as i32)
        }
        Schedule::Onecycle => one_cycle(cfg.lr, step, total_steps).0,
    }
}

/// Adam's β₁ for a step: the configured one, except under the one-cycle schedule, which
/// cycles it as PyTorch's `OneCycleLR` does by default.
pub fn beta1(cfg: &TrainConfig, step: usize, total_steps: usize) -> f64 {
    match cfg.schedule {
        Schedule::Onecycle => one_cycle(cfg.lr, step, total_steps).1,
        Schedule::Constant | Schedule::Step => cfg.beta1,
    }
}

pub fn loss_config(cfg: &TrainConfig) -> Result<LossConfig> {
    Ok(LossConfig {
        lambda_seg: cfg.lambda_seg,
        lambda_cls: cfg.lambda_cls,
        lambda_bg: cfg.lambda_bg,
        lambda_fg: cfg.lambda_fg,
        temperature: cfg.temperature,
        mask_mode: match cfg.mask_mode.as_str() {
            "paper" => MaskMode::Paper,
            "binary" => MaskMode::Binary,
            o => bail!("unknown mask mode `{o}` (paper or binary)"),
        },
    })
}

/// Losses of one step, as logged.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepLosses {
    pub total: f64,
    pub background: f64,
    pub foreground: f64,
    pub classification: f64,
    pub degenerate: usize,
}

/// Cross-entropy of `logits / t` against `labels` (mean over the batch).
pub fn cross_entropy(logits: &Tensor, labels: &[u32], t: f64) -> Result<Tensor> {
    let target = Tensor::new(labels, logits.device())?;
    let l = if (t - 1.0).abs() > 0.0 {
        (logits / t)?
    } else {
        logits.clone()
    };
    let logp = candle_nn::ops::log_softmax(&l, candle_core::D::Minus1)?;
    Ok(candle_nn::loss::nll(&logp, &target)?)
}

/// One optimisation step; returns the losses.
pub fn train_step(
    vit: &Vit,
    opt: &mut AdamW,
    batch: &Batch,
    cfg: &TrainConfig,
    lc: &LossConfig,
) -> Result<StepLosses> {
    match cfg.objective {
        Objective::Relevance => {
            let masks = batch
                .masks
                .as_ref()
                .context("the relevance objective needs masks (ImageNet-S data)")?;
            let out = relevance::train_step(vit, &batch.images, masks, &batch.labels, lc)?;
            opt.step(vit.params(), &out.grads)?;
            Ok(StepLosses {
                total: out.losses.total as f64,
                background: out.losses.background as f64,
                foreground: out.losses.foreground as f64,
                classification: out.losses.classification as f64,
                degenerate: out.degenerate_count,
            })
        }
        Objective::Ce => {
            let f = vit.forward_train(&batch.images)?;
            let loss = cross_entropy(&f.logits, &batch.labels, cfg.temperature)?;
            let store = loss.backward()?;
            let mut grads = std::collections::BTreeMap::new();
            for (name, var) in vit.params().iter() {
                let g = f
                    .param_grad(name, var, &store)
                    .with_context(|| format!("no gradient reached {name}"))?;
                grads.insert(name.clone(), g);
            }
            opt.step(vit.params(), &grads)?;
            let l: f32 = loss.to_scalar()?;
            Ok(StepLosses {
                total: l as f64,
                classification: l as f64,
                ..Default::default()
            })
        }
    }
}

/// Validation loss (the objective's) and top-1/top-5 against the ground truth, in %.
pub fn validate(
    vit: &Vit,
    data: &[Example],
    cfg: &TrainConfig,
    lc: &LossConfig,
    device: &Device,
) -> Result<ValFigures> {
    let mut loss_sum = 0.0;
    let (mut top1, mut top5, mut n) = (0usize, 0usize, 0usize);
    let indexed: Vec<(usize, &Example)> = data.iter().enumerate().collect();
    let chunks: Vec<&[(usize, &Example)]> = indexed.chunks(cfg.val_batch_size.max(1)).collect();
    let img_size = vit.config().img_size;
    let load =
        |chunk: &[(usize, &Example)]| load_batch(chunk, cfg, false, 0, img_size, &Device::Cpu);
    prefetched(&chunks, load, device, |batch| {
        let (loss, logits) = match (cfg.objective, &batch.masks) {
            (Objective::Relevance, Some(m)) => {
                let out = relevance::eval_loss(vit, &batch.images, m, &batch.labels, lc)?;
                (out.losses.total as f64, out.logits)
            }
            _ => {
                let logits = vit.forward(&batch.images)?;
                let l: f32 = cross_entropy(&logits, &batch.labels, cfg.temperature)?.to_scalar()?;
                (l as f64, logits)
            }
        };
        loss_sum += loss * batch.labels.len() as f64;
        let rows: Vec<Vec<f32>> = logits.to_vec2()?;
        for (row, &y) in rows.iter().zip(&batch.labels) {
            let mut idx: Vec<usize> = (0..row.len()).collect();
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            top1 += (idx[0] == y as usize) as usize;
            top5 += idx.iter().take(5).any(|&i| i == y as usize) as usize;
            n += 1;
        }
        Ok(())
    })?;
    let n = n.max(1) as f64;
    Ok(ValFigures {
        loss: loss_sum / n,
        top1: 100.0 * top1 as f64 / n,
        top5: 100.0 * top5 as f64 / n,
    })
}

/// Builds the model the run starts from: a named/pretrained one, or a random one.
pub fn initial_model(cfg: &TrainConfig, device: &Device) -> Result<Vit> {
    if let Some(arch) = &cfg.arch {
        return Ok(match &cfg.weights {
            None => Vit::random(arch, cfg.seed, device)?,
            Some(w) => {
                let t = model::weights::read_safetensors(std::path::Path::new(w), device)?;
                Vit::from_tensors(arch, t, device, w)?
            }
        });
    }
    let m = model::load(
        cfg.model.as_deref(),
        cfg.weights.as_deref(),
        &model::HubOptions::from_env(),
        device,
    )?;
    Ok(m.vit)
}

/// Header metadata recording the preprocessing of the model the run started from, so that a
/// bare `best.safetensors` is evaluated (official protocol) exactly as that model: without it,
/// a DeiT checkpoint would fall back to whatever default the loader has. Empty for a model
/// built from `arch` (no preprocessing of its own).
fn recorded_preprocessing(cfg: &TrainConfig) -> Result<std::collections::BTreeMap<String, String>> {
    let mut meta = std::collections::BTreeMap::new();
    if cfg.arch.is_none() {
        let p = model::hub::pretrained_cfg(
            cfg.model.as_deref(),
            cfg.weights.as_deref(),
            &model::HubOptions::from_env(),
        )?;
        meta.insert(
            model::weights::PRETRAINED_METADATA_KEY.to_string(),
            serde_json::to_string(&p).expect("PretrainedCfg serialises"),
        );
    }
    Ok(meta)
}

/// Runs (or continues) a training run in `run`. Returns the final state.
pub fn train(
    cfg: &TrainConfig,
    run: &RunDir,
    mut state: RunState,
    vit: Vit,
    device: &Device,
    quiet: bool,
    stop_after_epochs: Option<usize>,
) -> Result<RunState> {
    let first_epoch = state.epochs_done;
    cfg.validate()?;
    let lc = loss_config(cfg)?;
    let recorded = recorded_preprocessing(cfg)?;
    let data = prepare_data(cfg, run)?;
    let original = if cfg.arch.is_none() && state.original_val.is_none() && !data.val.is_empty() {
        Some(vit.clone())
    } else {
        None
    };
    let mut opt = AdamW::new(AdamWConfig {
        lr: cfg.lr,
        beta1: cfg.beta1,
        beta2: cfg.beta2,
        eps: cfg.eps,
        weight_decay: cfg.weight_decay,
    });
    // Original-model figures and relevance strips, once per run.
    let vis: Vec<Example> = data
        .val
        .iter()
        .filter(|e| e.mask.is_some())
        .take(cfg.vis_images)
        .cloned()
        .collect();
    let before_maps = if !vis.is_empty() && state.epochs_done == 0 {
        Some(crate::strips::relevance_maps(&vit, &vis, cfg, device)?)
    } else {
        None
    };
    if let Some(o) = &original {
        let f = validate(o, &data.val, cfg, &lc, device)?;
        state.original_val = Some(f);
    }
    if state.epochs_done > 0 {
        let (tensors, opt_state) = load_checkpoint(run, &state, device)?;
        vit.params().assign(&tensors)?;
        opt = opt_state;
    }
    if let Some(maps) = &before_maps {
        crate::strips::save_before(run, maps)?;
    }
    let metrics = Metrics::open(&run.file("metrics.csv"), state.epochs_done)?;
    let steps_per_epoch = data.train.len().div_ceil(cfg.batch_size.max(1));
    let total_steps = cfg
        .max_steps
        .unwrap_or(usize::MAX)
        .min(steps_per_epoch * cfg.epochs);
    let bar = report::Progress::new("train", total_steps as u64, "steps", quiet);
    bar.set_position(state.global_step as u64);
    while state.epochs_done < cfg.epochs && state.global_step < total_steps {
        let epoch = state.epochs_done;
        let mut order: Vec<usize> = (0..data.train.len()).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
            cfg.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        order.shuffle(&mut rng);
        let mut sums = StepLosses::default();
        let mut steps = 0usize;
        let t_epoch = Instant::now();
        let mut images = 0usize;
        let examples: Vec<(usize, &Example)> = order.iter().map(|&i| (i, &data.train[i])).collect();
        let chunks: Vec<&[(usize, &Example)]> = examples
            .chunks(cfg.batch_size.max(1))
            .take(total_steps.saturating_sub(state.global_step))
            .collect();
        let img_size = vit.config().img_size;
        // The crop and flip of each image depend only on (seed, epoch, index), so decoding ahead
        // on another thread gives the same pixels.
        let load = |chunk: &[(usize, &Example)]| {
            load_batch(chunk, cfg, true, epoch, img_size, &Device::Cpu)
        };
        let mut t0 = Instant::now();
        prefetched(&chunks, load, device, |batch| {
            opt.set_lr(learning_rate(cfg, epoch, state.global_step, total_steps));
            opt.set_beta1(beta1(cfg, state.global_step, total_steps));
            let l = train_step(&vit, &mut opt, &batch, cfg, &lc)?;
            if !l.total.is_finite() {
                bail!(
                    "the loss became {} at step {}: lower the learning rate",
                    l.total,
                    state.global_step
                );
            }
            let size = batch.labels.len();
            state.global_step += 1;
            steps += 1;
            images += size;
            sums.total += l.total;
            sums.background += l.background;
            sums.foreground += l.foreground;
            sums.classification += l.classification;
            sums.degenerate += l.degenerate;
            bar.set_message(format!(
                "epoch {epoch}, loss {:.4} (background {:.4}, foreground {:.4}, classification {:.4})",
                l.total, l.background, l.foreground, l.classification
            ));
            bar.inc_images(1, size as u64);
            if cfg.log_every > 0 && state.global_step.is_multiple_of(cfg.log_every) {
                metrics.append(&MetricsRow {
                    kind: "step".into(),
                    epoch,
                    step: state.global_step,
                    lr: opt.lr(),
                    loss: l.total,
                    background: l.background,
                    foreground: l.foreground,
                    classification: l.classification,
                    // From the end of the previous step: waiting for the batch counts.
                    images_per_s: size as f64 / t0.elapsed().as_secs_f64().max(1e-9),
                    degenerate_maps: l.degenerate,
                    ..Default::default()
                })?;
            }
            t0 = Instant::now();
            Ok(())
        })?;
        // Training only: validation, strips and checkpoints come after.
        let train_rate = images as f64 / t_epoch.elapsed().as_secs_f64().max(1e-9);
        let val = if data.val.is_empty() {
            None
        } else {
            Some(validate(&vit, &data.val, cfg, &lc, device)?)
        };
        let n = steps.max(1) as f64;
        let orig = state.original_val;
        metrics.append(&MetricsRow {
            kind: "epoch".into(),
            epoch,
            step: state.global_step,
            lr: opt.lr(),
            loss: sums.total / n,
            background: sums.background / n,
            foreground: sums.foreground / n,
            classification: sums.classification / n,
            val_loss: val.map(|v| v.loss),
            val_top1: val.map(|v| v.top1),
            val_top5: val.map(|v| v.top5),
            orig_top1: orig.map(|v| v.top1),
            orig_top5: orig.map(|v| v.top5),
            images_per_s: images as f64 / t_epoch.elapsed().as_secs_f64().max(1e-9),
            degenerate_maps: sums.degenerate,
        })?;
        // Lowest validation loss wins; ties go to the later epoch, as in the reference.
        let is_best = match (val, state.best_val_loss) {
            (Some(v), Some(b)) => v.loss <= b,
            (Some(_), None) => true,
            (None, _) => true,
        };
        if is_best {
            let mut meta = recorded.clone();
            meta.insert("robustvit.epoch".to_string(), epoch.to_string());
            model::save_model(&vit, &run.file("best.safetensors"), &meta)?;
            state.best_val_loss = val.map(|v| v.loss);
            state.best_epoch = Some(epoch);
        }
        let last_epoch = epoch + 1 == cfg.epochs || state.global_step >= total_steps;
        if !vis.is_empty() && (epoch.is_multiple_of(cfg.vis_every) || last_epoch) {
            let maps = crate::strips::relevance_maps(&vit, &vis, cfg, device)?;
            crate::strips::save_strips(run, &vis, &maps, epoch, cfg, vit.config().img_size)?;
        }
        state.epochs_done += 1;
        save_checkpoint(run, &vit, &opt, &state)?;
        bar.println(format!(
            "epoch {epoch} done: step {}/{total_steps}, loss {:.4} (background {:.4}, foreground {:.4}, classification {:.4}){}, {:.1} images/s, lr {:.3e}",
            state.global_step,
            sums.total / n,
            sums.background / n,
            sums.foreground / n,
            sums.classification / n,
            val.map(|v| format!(
                ", val loss {:.4} top-1 {:.2} top-5 {:.2}",
                v.loss, v.top1, v.top5
            ))
            .unwrap_or_default(),
            train_rate,
            opt.lr()
        ));
        if stop_after_epochs.is_some_and(|n| state.epochs_done - first_epoch >= n) {
            break;
        }
    }
    bar.finish();
    state.finished = state.epochs_done >= cfg.epochs || state.global_step >= total_steps;
    run.write_state(&state)?;
    Ok(state)
}

/// Header key of `last.safetensors` recording the epochs it has seen.
pub(crate) const EPOCHS_KEY: &str = "robustvit.epochs_done";

/// `last.safetensors` and `optimizer.safetensors` written beside the previous ones, then
/// `state.json` (the commit point), then renamed over them ([`crate::run_dir::promote_checkpoint`]);
/// each file written atomically and tagged with its epoch or step count.
pub fn save_checkpoint(run: &RunDir, vit: &Vit, opt: &AdamW, state: &RunState) -> Result<()> {
    let meta = [(EPOCHS_KEY.to_string(), state.epochs_done.to_string())].into();
    model::save_model(
        vit,
        &run.file(&crate::run_dir::next_file("last.safetensors")),
        &meta,
    )?;
    opt.save(&run.file(&crate::run_dir::next_file("optimizer.safetensors")))?;
    run.write_state(state)?;
    crate::run_dir::promote_checkpoint(&run.path, state)
}

fn load_checkpoint(
    run: &RunDir,
    state: &RunState,
    device: &Device,
) -> Result<(std::collections::BTreeMap<String, Tensor>, AdamW)> {
    crate::run_dir::promote_checkpoint(&run.path, state)?;
    let epochs_done = state.epochs_done;
    let p = run.file("last.safetensors");
    let t = model::weights::read_safetensors(&p, &Device::Cpu)?;
    let tag: usize = model::weights::read_metadata(&p)?
        .get(EPOCHS_KEY)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{} is not a checkpoint of this trainer", p.display()))?;
    if tag != epochs_done {
        bail!(
            "{} holds epoch {tag} but state.json says {epochs_done}: the run stopped while saving; start it again with --force",
            p.display()
        );
    }
    let opt = AdamW::load(&run.file("optimizer.safetensors"), device)?;
    if opt.steps() as usize != state.global_step {
        bail!(
            "optimizer.safetensors has taken {} steps but state.json says {}: the run stopped while saving; start it again with --force",
            opt.steps(),
            state.global_step
        );
    }
    Ok((t, opt))
}
