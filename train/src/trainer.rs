//! The epoch loop: one forward per step, validation, checkpoints, strips, resume.

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use std::path::Path;
use std::time::Instant;

use crate::optim::{step_decay_lr, AdamW, AdamWConfig};
use data::imagenet_s::{ImageNetS, ImageNetSSplit, SplitOptions};
use data::train_source::{folder_examples, seg_examples};
use data::{Batch, TrainExample};
use model::Vit;
use relevance::{LossConfig, MaskMode};

use crate::batches;
use crate::config::{Objective, Schedule, TrainConfig};
use crate::run_dir::{Metrics, MetricsRow, RunDir, RunState, ValFigures};

/// The training and validation examples of a run, and the split file that fixes them.
pub struct RunData {
    pub train: Vec<TrainExample>,
    pub val: Vec<TrainExample>,
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
        Schedule::Step => step_decay_lr(cfg.lr, cfg.lr_decay, cfg.lr_decay_every, epoch),
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
            let out = relevance::loss_and_grads(vit, &batch.images, masks, &batch.labels, lc)?;
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
            let computed = f.backward(&loss)?;
            let mut grads = std::collections::BTreeMap::new();
            for name in vit.params().names() {
                let g = computed
                    .get(name)
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
    data: &[TrainExample],
    cfg: &TrainConfig,
    lc: &LossConfig,
    device: &Device,
) -> Result<ValFigures> {
    let mut loss_sum = 0.0;
    let (mut top1, mut top5, mut n) = (0usize, 0usize, 0usize);
    for batch in batches::val_batches(cfg, data, vit.config().img_size)? {
        let batch = batches::on_device(batch, device)?;
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
            let ranked = data::ranking::top_k(row, 5, None);
            top1 += (ranked.first() == Some(&(y as usize))) as usize;
            top5 += ranked.contains(&(y as usize)) as usize;
            n += 1;
        }
    }
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
    let vis: Vec<TrainExample> = data
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
        let mut sums = StepLosses::default();
        let mut steps = 0usize;
        let t_epoch = Instant::now();
        let mut images = 0usize;
        let max_batches = total_steps.saturating_sub(state.global_step);
        let epoch_batches =
            batches::epoch_batches(cfg, &data.train, vit.config().img_size, epoch, max_batches)?;
        let mut t0 = Instant::now();
        for batch in epoch_batches {
            let batch = batches::on_device(batch, device)?;
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
        }
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
