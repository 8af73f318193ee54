//! The evaluation itself: load each model, run every requested dataset under every protocol,
//! merge the rows into the tables after each dataset (an interrupted sweep keeps what it
//! finished), then rebuild the comparison table and charts from the whole tables.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use data::loader::{Loader, LoaderOptions};
use data::segmentation::{GtSegsSource, SegFolderSource};
use data::{EvalSource, Protocol, SampleSource};
use model::{HubOptions, LoadedModel, WeightsSource};
use relevance::Explainer;

use crate::cli::{Dtype, EvalArgs, ModelSpec};
use crate::comparison::{self, PaperResults};
use crate::metrics::SegMetrics;
use crate::plan::{self, ClassificationSet, Datasets, SegSet, Skipped};
use crate::predictions::Predictions;
use crate::results::{self, RobustnessRow, SegmentationRow};
use crate::topk::{ClassMask, TopKAccuracy};

/// One (model, dataset) evaluation that was (or, with `--check`, would be) run.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub model: String,
    pub checkpoint: String,
    pub dataset: String,
    /// `robustness` or `segmentation`.
    pub task: String,
    pub images: usize,
    /// Protocols (robustness) or explainers (segmentation).
    pub variants: Vec<String>,
    /// Passes over the images: distinct preprocessings, or explainers.
    pub passes: usize,
}

/// What one invocation did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Rows produced by this run (also merged into `robustness.csv`).
    pub robustness: Vec<RobustnessRow>,
    /// Rows produced by this run (also merged into `segmentation.csv`).
    pub segmentation: Vec<SegmentationRow>,
    /// Datasets not found and not asked for by name.
    pub skipped: Vec<Skipped>,
    pub planned: Vec<Planned>,
    /// Files written.
    pub files: Vec<PathBuf>,
    /// The shell command that reproduces this run.
    pub command: String,
}

/// A loaded model with the names its rows carry.
struct Model {
    label: String,
    checkpoint: String,
    sha: String,
    loaded: LoadedModel,
    /// The classifier in the `--dtype` precision (the f32 model itself for f32); relevance
    /// maps always use the f32 model, since they need gradients.
    classifier: model::Vit,
}

impl Model {
    fn img_size(&self) -> u32 {
        self.loaded.vit.config().img_size as u32
    }
    fn num_classes(&self) -> usize {
        self.loaded.vit.config().num_classes
    }
}

fn check_spec(spec: &ModelSpec) -> Result<(), String> {
    if let Some(n) = &spec.name {
        model::variant(n).map_err(|e| e.to_string())?;
    }
    if let Some(c) = &spec.checkpoint {
        WeightsSource::parse(c).map_err(|e| format!("--checkpoint {c}: {e}"))?;
    }
    Ok(())
}

/// The weights one `--model`/`--checkpoint` pair names, with an error that says which pair
/// failed to load (shared by `evaluate` and `explain`).
pub(crate) fn load_spec(
    spec: &ModelSpec,
    hub: &HubOptions,
    device: &Device,
) -> Result<LoadedModel> {
    model::load(
        spec.name.as_deref(),
        spec.checkpoint.as_deref(),
        hub,
        device,
    )
    .with_context(|| match (&spec.name, &spec.checkpoint) {
        (Some(n), Some(c)) => format!("loading {n} from {c}"),
        (Some(n), None) => format!("loading the original weights of {n}"),
        (None, Some(c)) => format!("loading {c}"),
        (None, None) => unreachable!("rejected by model_specs"),
    })
}

fn load_model(spec: &ModelSpec, device: &Device, hub: &HubOptions, dtype: Dtype) -> Result<Model> {
    let loaded = load_spec(spec, hub, device)?;
    let label = match &spec.name {
        Some(n) => model::variant(n)?.name.to_owned(),
        None => plan::label_from_checkpoint(spec.checkpoint.as_deref().unwrap_or_default()),
    };
    let sha = results::sha256_prefix(&loaded.weights_path)?;
    let checkpoint = spec
        .checkpoint
        .clone()
        .unwrap_or_else(|| "pretrained".into());
    let (classifier, checkpoint) = match dtype {
        Dtype::F32 => (loaded.vit.clone(), checkpoint),
        // Reduced-precision rows are kept apart from the f32 ones in the tables.
        Dtype::Bf16 => (
            loaded.vit.to_dtype(DType::BF16)?,
            format!("{checkpoint} [bf16]"),
        ),
    };
    Ok(Model {
        label,
        checkpoint,
        sha,
        loaded,
        classifier,
    })
}

fn progress_bar(args: &EvalArgs, len: usize, msg: String) -> report::Progress {
    report::Progress::new(msg, len as u64, "images", args.quiet)
}

fn warn_skipped(dataset: &str, skipped: &[(PathBuf, String)]) {
    if skipped.is_empty() {
        return;
    }
    report::note(format!(
        "warning: {dataset}: {} image(s) could not be read and were left out:",
        skipped.len()
    ));
    for (p, why) in skipped.iter().take(5) {
        eprintln!("  {}: {why}", p.display());
    }
    if skipped.len() > 5 {
        eprintln!("  ... and {} more", skipped.len() - 5);
    }
}

fn loader_opts(args: &EvalArgs, batch: usize) -> LoaderOptions {
    LoaderOptions {
        batch_size: batch.max(1),
        threads: args.threads,
        prefetch: 2,
    }
}

/// Protocols grouped by identical preprocessing, so that the paper and official protocols
/// share one forward pass wherever they see the same pixels.
fn protocol_groups(
    args: &EvalArgs,
    m: &Model,
    set: &ClassificationSet,
) -> Result<Vec<(data::EvalTransform, Vec<Protocol>)>> {
    let mut groups: Vec<(data::EvalTransform, Vec<Protocol>)> = Vec::new();
    for p in plan::protocols_for(set, &args.protocol.protocols()) {
        let t = plan::transform(set.benchmark, p, m.img_size(), &m.loaded.pretrained)
            .with_context(|| format!("preprocessing of {} for {}", m.label, set.name))?;
        match groups.iter_mut().find(|(g, _)| *g == t) {
            Some((_, ps)) => ps.push(p),
            None => groups.push((t, vec![p])),
        }
    }
    Ok(groups)
}

fn protocol_name(p: Protocol) -> &'static str {
    p.name()
}

struct Stamp {
    date: String,
    git_rev: String,
}

fn eval_classification(
    args: &EvalArgs,
    m: &Model,
    set: &ClassificationSet,
    stamp: &Stamp,
    mut predictions: Option<&mut Predictions>,
) -> Result<Vec<RobustnessRow>> {
    let classes = m.num_classes();
    if let Some(t) = set
        .samples
        .iter()
        .flat_map(|s| s.targets.iter())
        .find(|&&t| t as usize >= classes)
    {
        bail!(
            "{}: {} has {classes} classes but {} ({}) has images of class {t}; \
             the benchmarks need an ImageNet-1k head (use --folder sets with a smaller head)",
            m.label,
            m.checkpoint,
            set.name,
            set.root.display()
        );
    }
    let device = m.loaded.vit.device().clone();
    let mut rows = Vec::new();
    for (transform, protocols) in protocol_groups(args, m, set)? {
        let scorers: Vec<(Protocol, Option<ClassMask>)> = protocols
            .iter()
            .map(|&p| {
                let mask = match set.benchmark.and_then(|b| b.label_mask(p)) {
                    Some(idx) => {
                        let idx: Vec<usize> = idx.iter().map(|&i| i as usize).collect();
                        Some(ClassMask::from_indices(classes, &idx)?)
                    }
                    None => None,
                };
                Ok((p, mask))
            })
            .collect::<Result<_, crate::topk::TopKError>>()?;
        let names: Vec<&str> = protocols.iter().map(|&p| protocol_name(p)).collect();
        let pb = progress_bar(
            args,
            set.samples.len(),
            format!("{} {} ({})", m.label, set.name, names.join("+")),
        );
        let source = Arc::new(EvalSource {
            samples: set.samples.clone(),
            transform,
        });
        let start = Instant::now();
        let loader = Loader::new(
            source,
            (0..set.samples.len()).collect(),
            loader_opts(args, args.batch_size),
            None,
        )?;
        let mut accs: Vec<TopKAccuracy> = scorers.iter().map(|_| TopKAccuracy::new()).collect();
        let mut skipped = Vec::new();
        for batch in loader {
            let batch = batch.with_context(|| format!("loading {}", set.name))?;
            pb.inc((batch.len() + batch.skipped.len()) as u64);
            skipped.extend(batch.skipped.iter().cloned());
            if batch.is_empty() {
                continue;
            }
            let x = batch.images.to_device(&device)?;
            let logits = m
                .classifier
                .forward(&x)
                .with_context(|| format!("{} on {}", m.label, set.name))?
                .to_dtype(DType::F32)?
                .to_vec2::<f32>()?;
            if let Some(pred) = predictions.as_deref_mut() {
                let group = names.join("+");
                let ctx = crate::predictions::Context {
                    model: &m.label,
                    checkpoint: &m.checkpoint,
                    dataset: &set.name,
                    protocols: &group,
                    root: &set.root,
                };
                for ((row, targets), path) in logits.iter().zip(&batch.targets).zip(&batch.paths) {
                    pred.add(&ctx, path, targets, row);
                }
            }
            for ((p, mask), acc) in scorers.iter().zip(accs.iter_mut()) {
                for (row, targets) in logits.iter().zip(&batch.targets) {
                    let t: Vec<usize> = match p {
                        Protocol::Paper => vec![targets[0] as usize],
                        Protocol::Official | Protocol::Testbed => {
                            targets.iter().map(|&t| t as usize).collect()
                        }
                    };
                    acc.add(row, &t, mask.as_ref())?;
                }
            }
        }
        let secs = start.elapsed().as_secs_f64();
        pb.finish();
        warn_skipped(&set.name, &skipped);
        for ((p, _), acc) in scorers.iter().zip(&accs) {
            let a = acc.finish();
            if a.images == 0 {
                bail!(
                    "{}: no image could be read ({} tried under {})",
                    set.name,
                    set.samples.len(),
                    set.root.display()
                );
            }
            rows.push(RobustnessRow {
                model: m.label.clone(),
                checkpoint: m.checkpoint.clone(),
                checkpoint_sha256: m.sha.clone(),
                dataset: set.name.clone(),
                protocol: protocol_name(*p).into(),
                images: a.images,
                top1: a.top1,
                top5: a.top5,
                top1_err: 100.0 - a.top1,
                top5_err: 100.0 - a.top5,
                images_per_s: if secs > 0.0 {
                    a.images as f64 / secs
                } else {
                    0.0
                },
                date: stamp.date.clone(),
                git_rev: stamp.git_rev.clone(),
            });
        }
    }
    Ok(rows)
}

/// Relevance maps of a batch as per-image vectors. An image whose raw map was constant gets
/// NaN, which is what the reference's division 0/0 gives and what the metrics reproduce (the
/// relevance crate returns zeros there instead).
fn maps(vit: &model::Vit, x: &Tensor, e: Explainer) -> Result<Vec<Vec<f32>>> {
    let r = relevance::explain(vit, x, e, None)?;
    let b = x.dim(0)?;
    let flat = r
        .map
        .to_dtype(DType::F32)?
        .reshape((b, ()))?
        .to_vec2::<f32>()?;
    Ok(flat
        .into_iter()
        .zip(&r.degenerate)
        .map(|(v, &d)| if d { vec![f32::NAN; v.len()] } else { v })
        .collect())
}

fn eval_segmentation(
    args: &EvalArgs,
    m: &Model,
    set: &SegSet,
    stamp: &Stamp,
) -> Result<Vec<SegmentationRow>> {
    let size = m.img_size();
    let source: Arc<dyn SampleSource> = match set {
        SegSet::GtSegs { gtsegs, indices } => Arc::new(GtSegsSource {
            gtsegs: gtsegs.clone(),
            indices: indices.clone(),
            size,
        }),
        SegSet::Folder { pairs, .. } => Arc::new(SegFolderSource {
            pairs: pairs.clone(),
            size,
        }),
    };
    let explainers = args.explainers();
    let pb = progress_bar(
        args,
        set.len(),
        format!("{} {} (segmentation)", m.label, set.name()),
    );
    let device = m.loaded.vit.device().clone();
    let loader = Loader::new(
        source,
        (0..set.len()).collect(),
        loader_opts(args, args.seg_batch_size),
        None,
    )?;
    let mut metrics: Vec<SegMetrics> = explainers.iter().map(|_| SegMetrics::new()).collect();
    let mut skipped = Vec::new();
    for batch in loader {
        let batch = batch.with_context(|| format!("loading {}", set.name()))?;
        skipped.extend(batch.skipped.iter().cloned());
        if batch.is_empty() {
            pb.inc(batch.skipped.len() as u64);
            continue;
        }
        let b = batch.len();
        let x = batch.images.to_device(&device)?;
        let masks: Vec<Vec<u8>> = batch
            .masks
            .as_ref()
            .context("segmentation batch without masks")?
            .reshape((b, ()))?
            .to_vec2::<f32>()?
            .into_iter()
            .map(|v| v.into_iter().map(|p| p as u8).collect())
            .collect();
        for (e, acc) in explainers.iter().zip(metrics.iter_mut()) {
            let maps = maps(&m.loaded.vit, &x, *e)
                .with_context(|| format!("{} maps of {} on {}", e, m.label, set.name()))?;
            for ((map, mask), path) in maps.iter().zip(&masks).zip(&batch.paths) {
                acc.add(map, mask)
                    .with_context(|| format!("scoring {}", path.display()))?;
            }
        }
        pb.inc((b + batch.skipped.len()) as u64);
    }
    pb.finish();
    warn_skipped(set.name(), &skipped);
    if let SegSet::Folder { missing_masks, .. } = set {
        if !missing_masks.is_empty() {
            report::note(format!(
                "warning: {}: {} image(s) have no mask and were left out, e.g. {}",
                set.name(),
                missing_masks.len(),
                missing_masks[0].display()
            ));
        }
    }
    let mut rows = Vec::new();
    for (e, acc) in explainers.iter().zip(&metrics) {
        let r = acc.finish();
        if r.images == 0 {
            bail!("{}: no image could be read", set.name());
        }
        rows.push(SegmentationRow {
            model: m.label.clone(),
            checkpoint: m.checkpoint.clone(),
            checkpoint_sha256: m.sha.clone(),
            dataset: set.name().into(),
            explainer: e.name().into(),
            images: r.images,
            pixel_acc: 100.0 * r.pixel_acc,
            miou: 100.0 * r.miou,
            map: 100.0 * r.map,
            mass_acc: 100.0 * r.mass_acc,
            pointing: 100.0 * r.pointing,
            date: stamp.date.clone(),
            git_rev: stamp.git_rev.clone(),
        });
    }
    Ok(rows)
}

fn plan_entries(
    args: &EvalArgs,
    m: Option<&Model>,
    spec: &ModelSpec,
    ds: &Datasets,
) -> Vec<Planned> {
    let (label, ckpt) = match m {
        Some(m) => (m.label.clone(), m.checkpoint.clone()),
        None => (
            spec.name.clone().unwrap_or_else(|| {
                plan::label_from_checkpoint(spec.checkpoint.as_deref().unwrap_or_default())
            }),
            spec.checkpoint
                .clone()
                .unwrap_or_else(|| "pretrained".into()),
        ),
    };
    let mut out = Vec::new();
    for set in &ds.classification {
        let protocols: Vec<String> = plan::protocols_for(set, &args.protocol.protocols())
            .into_iter()
            .map(|p| protocol_name(p).to_owned())
            .collect();
        let passes = m
            .and_then(|m| protocol_groups(args, m, set).ok())
            .map_or(protocols.len(), |g| g.len());
        out.push(Planned {
            model: label.clone(),
            checkpoint: ckpt.clone(),
            dataset: set.name.clone(),
            task: "robustness".into(),
            images: set.samples.len(),
            variants: protocols,
            passes,
        });
    }
    let explainers: Vec<String> = args
        .explainers()
        .iter()
        .map(|e| e.name().to_owned())
        .collect();
    for set in &ds.segmentation {
        out.push(Planned {
            model: label.clone(),
            checkpoint: ckpt.clone(),
            dataset: set.name().into(),
            task: "segmentation".into(),
            images: set.len(),
            variants: explainers.clone(),
            passes: explainers.len(),
        });
    }
    out
}

fn print_datasets(ds: &Datasets) {
    for c in &ds.classification {
        println!(
            "dataset {:20} {} images, {} ignored file(s)/folder(s), at {}",
            c.name,
            c.samples.len(),
            c.problems,
            c.root.display()
        );
    }
    for s in &ds.segmentation {
        let extra = match s {
            SegSet::Folder { missing_masks, .. } if !missing_masks.is_empty() => {
                format!(", {} image(s) without mask", missing_masks.len())
            }
            _ => String::new(),
        };
        println!(
            "dataset {:20} {} images{extra} (segmentation), at {}",
            s.name(),
            s.len(),
            s.location()
        );
    }
    for s in &ds.skipped {
        println!("skipped {:20} {}", s.dataset, s.reason);
    }
}

/// With `--resume`: the rows of `dataset` already in a table for exactly these weights, one
/// for each of `variants` (protocols or explainers), or None when any is missing. Each dataset
/// is merged into the table atomically once evaluated, so a row there is a finished dataset.
fn finished<R: Clone>(
    done: &[R],
    m: &Model,
    dataset: &str,
    variants: &[&str],
    fields: impl Fn(&R) -> (&String, &String, &String, &String, &String),
) -> Option<Vec<R>> {
    variants
        .iter()
        .map(|v| {
            done.iter()
                .find(|r| {
                    let (model, ckpt, sha, ds, variant) = fields(r);
                    model == &m.label
                        && ckpt == &m.checkpoint
                        && sha == &m.sha
                        && ds == dataset
                        && variant == v
                })
                .cloned()
        })
        .collect()
}

/// Runs the evaluation described by `args` (see the binary's `--help`).
pub fn run(args: &EvalArgs) -> Result<RunSummary> {
    let mut summary = RunSummary {
        command: args.shell_command(),
        ..Default::default()
    };
    let specs = args.model_specs().map_err(anyhow::Error::msg)?;
    let paper = match &args.paper_results {
        Some(p) => PaperResults::load(p)?,
        None => PaperResults::builtin(),
    };
    let ds = plan::resolve(args);
    let mut problems = ds.problems.clone();
    for s in &specs {
        if let Err(e) = check_spec(s) {
            problems.push(e);
        }
    }
    if ds.classification.is_empty() && ds.segmentation.is_empty() && problems.is_empty() {
        problems.push(format!(
            "no dataset found under --data-root {} (conventional folder names: see --help)",
            args.data_root.display()
        ));
    }
    summary.skipped = ds.skipped.clone();
    let (device, device_line) = model::select_device(&args.device)?;
    report::note(format!("device: {device_line}"));
    let mut hub = HubOptions::from_env();
    hub.progress = !args.quiet;

    if args.check {
        print_datasets(&ds);
        if let Err(e) = crate::check::check_outputs(&args.out) {
            problems.push(format!("{e:#}"));
        }
        if !args.check_quick {
            for d in crate::check::decode_datasets(&ds) {
                println!(
                    "decoded {:20} {} of {} files, {} bad",
                    d.dataset,
                    d.decoded(),
                    d.found,
                    d.bad.len()
                );
                if !d.bad.is_empty() {
                    let named: Vec<String> = d
                        .bad
                        .iter()
                        .map(|(p, why)| format!("    {}: {why}", p.display()))
                        .collect();
                    problems.push(format!(
                        "{}: {} of {} files do not decode (delete or re-download them):\n{}",
                        d.dataset,
                        d.bad.len(),
                        d.found,
                        named.join("\n")
                    ));
                }
            }
        }
        let mut check_hub = hub.clone();
        // A check must not start multi-GB downloads; missing weights are reported instead.
        check_hub.offline = true;
        for s in &specs {
            if check_spec(s).is_err() {
                continue;
            }
            match load_model(s, &Device::Cpu, &check_hub, Dtype::F32) {
                Ok(m) => {
                    let c = m.loaded.vit.config();
                    println!(
                        "model   {:20} {} (sha256 {}, {}, {} px, {} classes, {}-d, {} blocks)",
                        m.label,
                        m.checkpoint,
                        m.sha,
                        m.loaded.weights_path.display(),
                        c.img_size,
                        c.num_classes,
                        c.embed_dim,
                        c.depth
                    );
                    summary.planned.extend(plan_entries(args, Some(&m), s, &ds));
                }
                Err(e) => {
                    let local = s
                        .checkpoint
                        .as_deref()
                        .is_some_and(|c| Path::new(c).exists());
                    problems.push(if local {
                        format!("{e:#}")
                    } else {
                        format!(
                            "{e:#} (--check never downloads; a run without --check fetches \
                             missing hub weights)"
                        )
                    });
                }
            }
        }
        for p in &summary.planned {
            println!(
                "would run {} {} on {}: {} images x {} pass(es) ({})",
                p.model,
                p.checkpoint,
                p.dataset,
                p.images,
                p.passes,
                p.variants.join(", ")
            );
        }
        if !problems.is_empty() {
            bail!("check failed:\n  {}", problems.join("\n  "));
        }
        println!("check passed; run without --check to evaluate");
        return Ok(summary);
    }
    if !problems.is_empty() {
        bail!(
            "nothing was run; fix these first (--check lists everything):\n  {}",
            problems.join("\n  ")
        );
    }
    for s in &ds.skipped {
        report::note(format!("skipped {}: {}", s.dataset, s.reason));
    }

    let stamp = Stamp {
        date: results::utc_date(SystemTime::now()),
        git_rev: results::git_rev(),
    };
    crate::check::prepare_outputs(&args.out)?;
    let mut predictions = args.predictions.clone().map(Predictions::new);
    let rob_path = args.out.join("robustness.csv");
    let seg_path = args.out.join("segmentation.csv");
    report::note(format!("output folder: {}", args.out.display()));
    for spec in &specs {
        report::note(format!(
            "model: {}, weights from {}",
            spec.name
                .as_deref()
                .unwrap_or("architecture from the weights' config"),
            model::describe_source(spec.name.as_deref(), spec.checkpoint.as_deref(), &hub)
        ));
        let m = load_model(spec, &device, &hub, args.dtype)?;
        report::note(format!(
            "model: {} {} loaded from {} (sha256 {})",
            m.label,
            m.checkpoint,
            m.loaded.weights_path.display(),
            m.sha
        ));
        summary
            .planned
            .extend(plan_entries(args, Some(&m), spec, &ds));
        let (done_rob, done_seg) = if args.resume {
            (
                results::read_rows::<RobustnessRow>(&rob_path)?,
                results::read_rows::<SegmentationRow>(&seg_path)?,
            )
        } else {
            (Vec::new(), Vec::new())
        };
        let explainers: Vec<&str> = args.explainers().iter().map(|e| e.name()).collect();
        for set in &ds.classification {
            let protocols: Vec<&str> = plan::protocols_for(set, &args.protocol.protocols())
                .into_iter()
                .map(protocol_name)
                .collect();
            let kept = finished(&done_rob, &m, &set.name, &protocols, |r| {
                (
                    &r.model,
                    &r.checkpoint,
                    &r.checkpoint_sha256,
                    &r.dataset,
                    &r.protocol,
                )
            });
            if let Some(rows) = kept {
                println!(
                    "{} {} {}: kept from {}",
                    m.label,
                    m.checkpoint,
                    set.name,
                    rob_path.display()
                );
                summary.robustness.extend(rows);
                continue;
            }
            let rows = eval_classification(args, &m, set, &stamp, predictions.as_mut())?;
            if let Some(p) = &predictions {
                p.write()
                    .with_context(|| format!("writing --predictions {}", p.path().display()))?;
            }
            results::merge_rows(&rob_path, &rows)?;
            for r in &rows {
                println!(
                    "{} {} {} {}: top-1 {:.3} top-5 {:.3} ({} images, {:.1} images/s)",
                    r.model,
                    r.checkpoint,
                    r.dataset,
                    r.protocol,
                    r.top1,
                    r.top5,
                    r.images,
                    r.images_per_s
                );
            }
            summary.robustness.extend(rows);
        }
        for set in &ds.segmentation {
            let kept = finished(&done_seg, &m, set.name(), &explainers, |r| {
                (
                    &r.model,
                    &r.checkpoint,
                    &r.checkpoint_sha256,
                    &r.dataset,
                    &r.explainer,
                )
            });
            if let Some(rows) = kept {
                println!(
                    "{} {} {}: kept from {}",
                    m.label,
                    m.checkpoint,
                    set.name(),
                    seg_path.display()
                );
                summary.segmentation.extend(rows);
                continue;
            }
            let rows = eval_segmentation(args, &m, set, &stamp)?;
            results::merge_rows(&seg_path, &rows)?;
            for r in &rows {
                println!(
                    "{} {} {} {}: pixel acc {:.3} mIoU {:.3} mAP {:.3} mass {:.3} pointing {:.3}",
                    r.model,
                    r.checkpoint,
                    r.dataset,
                    r.explainer,
                    r.pixel_acc,
                    r.miou,
                    r.map,
                    r.mass_acc,
                    r.pointing
                );
            }
            summary.segmentation.extend(rows);
        }
    }
    if !summary.robustness.is_empty() {
        summary.files.push(rob_path.clone());
    }
    if !summary.segmentation.is_empty() {
        summary.files.push(seg_path.clone());
    }

    let all_rob: Vec<RobustnessRow> = results::read_rows(&rob_path)?;
    let all_seg: Vec<SegmentationRow> = results::read_rows(&seg_path)?;
    // The charts show the robustness table. A run without robustness sets (segmentation only)
    // leaves them as the run that had them drew them, with its --folder sets in their order.
    let folder_order: Vec<&str> = args.folders.iter().map(|f| f.name.as_str()).collect();
    let chart_order = (!summary.robustness.is_empty()).then_some(folder_order.as_slice());
    let written = comparison::write_comparison(&args.out, &all_rob, &all_seg, &paper, chart_order)?;
    summary.files.extend(written);
    for f in &summary.files {
        report::note(format!("wrote {}", f.display()));
    }
    if !args.quiet {
        report::note(format!("reproduce with: {}", summary.command));
    }
    Ok(summary)
}
