//! Command-line interface of the `train` binary, also used in-process by the experiment driver:
//! it builds a [`TrainArgs`], calls [`execute`] and prints [`TrainArgs::shell_command`], the
//! command line derived from the same value, so a renamed flag fails to compile there.

// The fields' doc comments are also the `--help` text, written for a terminal: `<wnid>`,
// `id[@revision]` are placeholders there, not HTML or intra-doc links.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::path::PathBuf;

use crate::config::{Objective, PaperSettings, Schedule, TrainConfig, Transform};
use crate::run_dir::{RunDir, RunState, StartOrResume};

#[derive(Debug, Clone, PartialEq, Parser)]
#[command(
    name = "train",
    about = "Finetune a ViT so that its relevance map sits on the object (RobustViT), or with plain cross-entropy",
    version = report::version(env!("CARGO_PKG_VERSION"))
)]
pub struct TrainArgs {
    /// One of the paper's models: vit-base, vit-large, augreg-small, augreg-base, augreg-large,
    /// deit-small, deit-base (or an alias: vit-b, ar-s, deit-b, ...). Sets the paper's defaults.
    #[arg(long)]
    pub model: Option<String>,
    /// Weights: a .safetensors file, a folder with model.safetensors, or a hub id[@revision].
    #[arg(long)]
    pub weights: Option<String>,
    /// Architecture as a JSON file of model::VitConfig: the model starts from random weights
    /// (seeded by --seed), or from --weights read with this architecture.
    #[arg(long)]
    pub arch: Option<PathBuf>,
    /// ImageNet train images (<wnid>/<name>.JPEG), or ImageNetS919/train-semi.
    #[arg(long)]
    pub imagenet: Option<PathBuf>,
    /// ImageNet-S919 train-semi-segmentation masks (<wnid>/<name>.png).
    #[arg(long = "imagenet-s")]
    pub imagenet_s: Option<PathBuf>,
    /// Separate validation images (default: the classes after the training classes).
    #[arg(long)]
    pub val_imagenet: Option<PathBuf>,
    /// ImageNet-S masks of the --val-imagenet images (the two go together).
    #[arg(long = "val-imagenet-s")]
    pub val_imagenet_s: Option<PathBuf>,
    /// Classification folder (<wnid>/<image>) without masks, for the `ce` objective.
    #[arg(long)]
    pub train_folder: Option<PathBuf>,
    /// Validation folder (<wnid>/<image>) for the `ce` objective (default: no validation).
    #[arg(long)]
    pub val_folder: Option<PathBuf>,
    /// Split file to read (or write, if missing); default: split.json in the run folder.
    #[arg(long)]
    pub split_file: Option<PathBuf>,
    /// Run folder (default results/runs/<model>-<timestamp>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the interrupted run in this folder.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Overwrite a run folder that already holds a run.
    #[arg(long)]
    pub force: bool,
    /// Start the run in --out, or continue it if that folder already holds this run (a job
    /// that may be killed and started again, e.g. a requeued cluster task).
    #[arg(long, requires = "out", conflicts_with_all = ["resume", "force"])]
    pub resume_or_start: bool,
    /// What to optimise (default: relevance, the paper's objective).
    #[arg(long, value_enum)]
    pub objective: Option<Objective>,
    /// Peak learning rate of AdamW (default: the paper's for --model, e.g. vit-base 3e-6;
    /// required for a model without one).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Logit temperature of the classification term (paper: DeiT-B 0.65, DeiT-S 0.55).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Passes over the training images (default: 50, the paper's).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Training images per optimisation step (default: 8, the paper's).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Images per forward pass of the validation (default: 10; does not change the results).
    #[arg(long)]
    pub val_batch_size: Option<usize>,
    /// AdamW decoupled weight decay (default: 1e-4, the paper's).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// How the learning rate moves over the run (default: step, the paper's).
    #[arg(long, value_enum)]
    pub schedule: Option<Schedule>,
    /// Factor of the `step` schedule: lr × decay^(epoch / --lr-decay-every) (default: 0.85).
    #[arg(long)]
    pub lr_decay: Option<f64>,
    /// Epochs between two decays of the `step` schedule (default: 2).
    #[arg(long)]
    pub lr_decay_every: Option<usize>,
    /// Weight of the relevance (segmentation) part of the loss (default: 0.8).
    #[arg(long)]
    pub lambda_seg: Option<f64>,
    /// Weight of the classification part of the loss (default: 0.2).
    #[arg(long)]
    pub lambda_cls: Option<f64>,
    /// Weight of the background term inside the relevance part (default: 2).
    #[arg(long)]
    pub lambda_bg: Option<f64>,
    /// Weight of the foreground term inside the relevance part (default: 0.3).
    #[arg(long)]
    pub lambda_fg: Option<f64>,
    /// Background mask of the relevance loss: `paper` (the reference's reverse-mask quirk,
    /// default) or `binary` (1 - mask).
    #[arg(long)]
    pub mask_mode: Option<String>,
    /// Classes the training images are drawn from (default: 500, the paper's); the
    /// validation images come from the classes after them.
    #[arg(long)]
    pub train_classes: Option<usize>,
    /// Training images per class (default: 3, the paper's).
    #[arg(long)]
    pub train_per_class: Option<usize>,
    /// Validation images per class (default: 1, the paper's).
    #[arg(long)]
    pub val_per_class: Option<usize>,
    /// Use only the first N classes (quick trials).
    #[arg(long)]
    pub limit_classes: Option<usize>,
    /// Stop after N optimisation steps (quick trials).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Seed of the split, the random crops and flips, the shuffling and a random initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Training augmentation (default: paper).
    #[arg(long, value_enum)]
    pub transform: Option<Transform>,
    /// Input normalisation mean, e.g. 0.5,0.5,0.5 (the paper uses 0.5/0.5 for every model).
    #[arg(long, value_delimiter = ',')]
    pub mean: Option<Vec<f32>>,
    /// Input normalisation standard deviation, e.g. 0.5,0.5,0.5 (the paper's for every model).
    #[arg(long, value_delimiter = ',')]
    pub std: Option<Vec<f32>>,
    /// Log a metrics row every N steps.
    #[arg(long, default_value_t = 10)]
    pub log_every: usize,
    /// Validation images drawn as strips every epoch.
    #[arg(long, default_value_t = 4)]
    pub vis_images: usize,
    /// Draw the strips every N epochs (and after the last).
    #[arg(long, default_value_t = 1)]
    pub vis_every: usize,
    /// cpu, cuda or auto (the GPU when built with --features cuda and one is present, else the
    /// CPU; the first lines of the output say which and why).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// No progress bar, no progress or epoch lines (the start and end lines remain).
    #[arg(long)]
    pub quiet: bool,
    /// Stop (resumably) after this many epochs of this invocation, e.g. to fit a cluster's
    /// time limit; continue later with --resume.
    #[arg(long)]
    pub stop_after_epochs: Option<usize>,
}

/// The name a value-enum flag takes on the command line.
trait ValueName {
    fn value_name(&self) -> String;
}

impl<T: clap::ValueEnum> ValueName for T {
    fn value_name(&self) -> String {
        self.to_possible_value()
            .expect("no skipped variants")
            .get_name()
            .to_owned()
    }
}

fn triple(v: &Option<Vec<f32>>, default: [f32; 3], name: &str) -> Result<[f32; 3]> {
    match v {
        None => Ok(default),
        Some(x) if x.len() == 3 => Ok([x[0], x[1], x[2]]),
        Some(x) => bail!(
            "--{name} takes three comma-separated numbers, got {}",
            x.len()
        ),
    }
}

impl Default for TrainArgs {
    /// What `train` with no flags means (each setting then comes from the paper's defaults).
    fn default() -> Self {
        Self::parse_from(["train"])
    }
}

impl TrainArgs {
    /// The arguments (after the program name) that reproduce these settings; defaults are left
    /// out, the flags that say how the run starts come first.
    /// `TrainArgs::parse_from(["train"].chain(args))` gives `self` back.
    pub fn to_args(&self) -> Vec<String> {
        let d = Self::default();
        let mut a: Vec<String> = Vec::new();
        if self.resume_or_start {
            a.push("--resume-or-start".into());
        }
        if self.force {
            a.push("--force".into());
        }
        let mut push = |flag: &str, v: Option<String>| {
            if let Some(v) = v {
                a.push(format!("--{flag}"));
                a.push(v);
            }
        };
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let num = |v: Option<f64>| v.map(|v| v.to_string());
        let count = |v: Option<usize>| v.map(|v| v.to_string());
        let changed = |v: String, d: String| (v != d).then_some(v);
        push("resume", path(&self.resume));
        push("model", self.model.clone());
        push("weights", self.weights.clone());
        push("arch", path(&self.arch));
        push("imagenet", path(&self.imagenet));
        push("imagenet-s", path(&self.imagenet_s));
        push("val-imagenet", path(&self.val_imagenet));
        push("val-imagenet-s", path(&self.val_imagenet_s));
        push("train-folder", path(&self.train_folder));
        push("val-folder", path(&self.val_folder));
        push("split-file", path(&self.split_file));
        push("out", path(&self.out));
        push("objective", self.objective.map(|v| v.value_name()));
        push("lr", num(self.lr));
        push("temperature", num(self.temperature));
        push("epochs", count(self.epochs));
        push("batch-size", count(self.batch_size));
        push("val-batch-size", count(self.val_batch_size));
        push("weight-decay", num(self.weight_decay));
        push("schedule", self.schedule.map(|v| v.value_name()));
        push("lr-decay", num(self.lr_decay));
        push("lr-decay-every", count(self.lr_decay_every));
        push("lambda-seg", num(self.lambda_seg));
        push("lambda-cls", num(self.lambda_cls));
        push("lambda-bg", num(self.lambda_bg));
        push("lambda-fg", num(self.lambda_fg));
        push("mask-mode", self.mask_mode.clone());
        push("train-classes", count(self.train_classes));
        push("train-per-class", count(self.train_per_class));
        push("val-per-class", count(self.val_per_class));
        push("limit-classes", count(self.limit_classes));
        push("max-steps", count(self.max_steps));
        push("seed", changed(self.seed.to_string(), d.seed.to_string()));
        push("transform", self.transform.map(|v| v.value_name()));
        let list = |v: &Option<Vec<f32>>| {
            v.as_ref()
                .map(|v| v.iter().map(f32::to_string).collect::<Vec<_>>().join(","))
        };
        push("mean", list(&self.mean));
        push("std", list(&self.std));
        push(
            "log-every",
            changed(self.log_every.to_string(), d.log_every.to_string()),
        );
        push(
            "vis-images",
            changed(self.vis_images.to_string(), d.vis_images.to_string()),
        );
        push(
            "vis-every",
            changed(self.vis_every.to_string(), d.vis_every.to_string()),
        );
        push("device", changed(self.device.clone(), d.device.clone()));
        push("stop-after-epochs", count(self.stop_after_epochs));
        if self.quiet {
            a.push("--quiet".into());
        }
        a
    }

    /// The shell command that runs this training from the workspace root.
    pub fn shell_command(&self) -> String {
        report::command_line("cargo run --release -p train --", &self.to_args())
    }

    /// The paper's settings for the model, overridden by every flag given.
    pub fn resolve(&self) -> Result<TrainConfig> {
        let paper = PaperSettings::load();
        let c = &paper.common;
        let canonical = self
            .model
            .as_deref()
            .map(model::variant)
            .transpose()?
            .map(|v| v.name);
        let per_model = canonical.and_then(|n| paper.models.get(n));
        let arch = match &self.arch {
            Some(p) => Some(
                serde_json::from_str::<model::VitConfig>(
                    &std::fs::read_to_string(p)
                        .with_context(|| format!("reading --arch {}", p.display()))?,
                )
                .with_context(|| format!("{} is not a model::VitConfig JSON", p.display()))?,
            ),
            None => None,
        };
        if self.model.is_none() && self.weights.is_none() && arch.is_none() {
            bail!("say which model to train: --model NAME, --weights SPEC, or --arch CONFIG.json");
        }
        let lr = self
            .lr
            .or(per_model.map(|m| m.lr))
            .context("no paper learning rate for this model: give --lr")?;
        let objective = self.objective.unwrap_or(match c.objective.as_str() {
            "ce" => Objective::Ce,
            _ => Objective::Relevance,
        });
        Ok(TrainConfig {
            model: canonical.map(String::from),
            weights: self.weights.clone(),
            arch,
            objective,
            lr,
            temperature: self
                .temperature
                .or(per_model.map(|m| m.temperature))
                .unwrap_or(1.0),
            epochs: self.epochs.unwrap_or(c.epochs),
            batch_size: self.batch_size.unwrap_or(c.batch_size),
            val_batch_size: self.val_batch_size.unwrap_or(c.val_batch_size),
            weight_decay: self.weight_decay.unwrap_or(c.weight_decay),
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            schedule: self.schedule.unwrap_or(Schedule::Step),
            lr_decay: self.lr_decay.unwrap_or(c.lr_decay),
            lr_decay_every: self.lr_decay_every.unwrap_or(c.lr_decay_every),
            lambda_seg: self.lambda_seg.unwrap_or(c.lambda_seg),
            lambda_cls: self.lambda_cls.unwrap_or(c.lambda_cls),
            lambda_bg: self.lambda_bg.unwrap_or(c.lambda_bg),
            lambda_fg: self.lambda_fg.unwrap_or(c.lambda_fg),
            mask_mode: self
                .mask_mode
                .clone()
                .unwrap_or_else(|| c.mask_mode.clone()),
            train_classes: self.train_classes.unwrap_or(c.train_classes),
            train_per_class: self.train_per_class.unwrap_or(c.train_per_class),
            val_per_class: self.val_per_class.unwrap_or(c.val_per_class),
            limit_classes: self.limit_classes,
            max_steps: self.max_steps,
            seed: self.seed,
            transform: self.transform.unwrap_or(Transform::Paper),
            mean: triple(&self.mean, [0.5; 3], "mean")?,
            std: triple(&self.std, [0.5; 3], "std")?,
            imagenet: self.imagenet.clone(),
            imagenet_s: self.imagenet_s.clone(),
            val_imagenet: self.val_imagenet.clone(),
            val_imagenet_s: self.val_imagenet_s.clone(),
            train_folder: self.train_folder.clone(),
            val_folder: self.val_folder.clone(),
            split_file: self.split_file.clone(),
            log_every: self.log_every,
            vis_images: self.vis_images,
            vis_every: self.vis_every.max(1),
        })
    }
}

/// Checks the data folders before any work, with the data crate's messages.
fn check_inputs(cfg: &TrainConfig) -> Result<()> {
    for (flag, p) in [
        ("--imagenet", &cfg.imagenet),
        ("--imagenet-s", &cfg.imagenet_s),
        ("--val-imagenet", &cfg.val_imagenet),
        ("--val-imagenet-s", &cfg.val_imagenet_s),
        ("--train-folder", &cfg.train_folder),
        ("--val-folder", &cfg.val_folder),
    ] {
        if let Some(p) = p {
            if !p.is_dir() {
                bail!("{flag} {} does not exist or is not a folder", p.display());
            }
        }
    }
    Ok(())
}

/// The model and where its starting weights come from, in words (first lines of the log).
fn weights_origin(cfg: &TrainConfig, args: &TrainArgs) -> String {
    let arch = || {
        args.arch
            .as_ref()
            .map_or("the run's config.json".into(), |p| p.display().to_string())
    };
    match (&cfg.arch, &cfg.weights) {
        (Some(_), None) => format!(
            "architecture of {}, random initialisation (seed {})",
            arch(),
            cfg.seed
        ),
        (Some(_), Some(w)) => format!("architecture of {}, weights from local file {w}", arch()),
        (None, w) => format!(
            "{}, weights from {}",
            cfg.model
                .as_deref()
                .unwrap_or("architecture from the weights' config"),
            model::describe_source(
                cfg.model.as_deref(),
                w.as_deref(),
                &model::HubOptions::from_env()
            )
        ),
    }
}

/// Runs `train` with these arguments; returns the run folder.
pub fn execute(args: &TrainArgs) -> Result<PathBuf> {
    let (device, device_line) = model::select_device(&args.device)?;
    report::note(format!("device: {device_line}"));
    let mut force = args.force;
    let mut resume = args.resume.clone();
    if let (true, Some(out)) = (args.resume_or_start, &args.out) {
        match crate::run_dir::start_or_resume(out, &args.resolve()?)? {
            StartOrResume::Start => {}
            StartOrResume::Restart => {
                report::note(format!(
                    "run {} cannot be continued: starting it over",
                    out.display()
                ));
                force = true;
            }
            StartOrResume::Resume => resume = Some(out.clone()),
            StartOrResume::Finished => {
                report::note(format!("run {} is already finished", out.display()));
                return Ok(out.clone());
            }
        }
    }
    let (run, cfg, state, vit) = match &resume {
        Some(dir) => {
            let (run, cfg, state) = RunDir::open(dir)?;
            if state.finished {
                report::note(format!("run {} is already finished", dir.display()));
                return Ok(run.path);
            }
            check_inputs(&cfg)?;
            report::note(format!("model: {}", weights_origin(&cfg, args)));
            let vit = crate::trainer::initial_model(&cfg, &device)?;
            report::note(format!(
                "run folder: {} (resuming after epoch {})",
                run.path.display(),
                state.epochs_done
            ));
            (run, cfg, state, vit)
        }
        None => {
            let cfg = args.resolve()?;
            check_inputs(&cfg)?;
            report::note(format!("model: {}", weights_origin(&cfg, args)));
            // Weights before the run folder: a missing download fails in seconds and leaves
            // nothing behind that a second attempt would have to --force.
            let vit = crate::trainer::initial_model(&cfg, &device)?;
            let out = args.out.clone().unwrap_or_else(|| {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                PathBuf::from("results/runs").join(format!(
                    "{}-{stamp}",
                    cfg.model.as_deref().unwrap_or("model")
                ))
            });
            let run = crate::trainer::new_run(&cfg, &out, force)?;
            report::note(format!("run folder: {}", run.path.display()));
            let state = RunState::new(cfg.seed);
            (run, cfg, state, vit)
        }
    };
    crate::trainer::train(
        &cfg,
        &run,
        state,
        vit,
        &device,
        args.quiet,
        args.stop_after_epochs,
    )?;
    Ok(run.path)
}

/// What a run folder holds after a run (sorted), for the last lines of the log.
pub fn written_files(run: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(run)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every flag set to a value other than its default.
    fn every_flag() -> TrainArgs {
        let p = |s: &str| Some(PathBuf::from(s));
        TrainArgs {
            model: Some("deit-s".into()),
            weights: Some("org/repo@main".into()),
            arch: p("my arch.json"),
            imagenet: p("/d/train"),
            imagenet_s: p("/d/masks"),
            val_imagenet: p("/d/val"),
            val_imagenet_s: p("/d/val-masks"),
            train_folder: p("/d/folder"),
            val_folder: p("/d/val-folder"),
            split_file: p("/d/split.json"),
            out: p("runs/it's"),
            resume: None,
            force: false,
            resume_or_start: true,
            objective: Some(Objective::Ce),
            lr: Some(3e-6),
            temperature: Some(0.65),
            epochs: Some(7),
            batch_size: Some(3),
            val_batch_size: Some(5),
            weight_decay: Some(0.1 + 0.2),
            schedule: Some(Schedule::Onecycle),
            lr_decay: Some(0.85),
            lr_decay_every: Some(3),
            lambda_seg: Some(0.8),
            lambda_cls: Some(0.2),
            lambda_bg: Some(2.0),
            lambda_fg: Some(0.3),
            mask_mode: Some("binary".into()),
            train_classes: Some(10),
            train_per_class: Some(2),
            val_per_class: Some(4),
            limit_classes: Some(6),
            max_steps: Some(9),
            seed: 42,
            transform: Some(Transform::None),
            mean: Some(vec![0.485, 0.456, 0.406]),
            std: Some(vec![0.229, 0.224, 1.0 / 3.0]),
            log_every: 1,
            vis_images: 0,
            vis_every: 1000,
            device: "cpu".into(),
            quiet: true,
            stop_after_epochs: Some(2),
        }
    }

    /// The flags `--resume-or-start` excludes.
    fn resumed() -> TrainArgs {
        TrainArgs {
            resume: Some(PathBuf::from("runs/old")),
            force: true,
            resume_or_start: false,
            ..every_flag()
        }
    }

    fn parse(args: &[String]) -> TrainArgs {
        TrainArgs::try_parse_from(std::iter::once("train".to_string()).chain(args.to_vec()))
            .unwrap_or_else(|e| panic!("{e}: {args:?}"))
    }

    #[test]
    fn args_round_trip_through_the_command_line() {
        for a in [every_flag(), resumed()] {
            assert_eq!(parse(&a.to_args()), a);
        }
        let a = every_flag();
        assert_eq!(TrainArgs::default().to_args(), Vec::<String>::new());
        assert_eq!(parse(&[]), TrainArgs::default());
        let one = TrainArgs {
            lr: Some(2e-3),
            ..TrainArgs::default()
        };
        assert_eq!(one.to_args(), ["--lr", "0.002"]);
        let cmd = a.shell_command();
        assert!(
            cmd.starts_with("cargo run --release -p train -- --resume-or-start --model deit-s"),
            "{cmd}"
        );
        assert!(cmd.contains("--out 'runs/it'\\''s'"), "{cmd}");
    }

    /// A flag added to `train` without a line in `to_args` would be dropped from every printed
    /// job; this names it.
    #[test]
    fn to_args_writes_every_flag() {
        let mut args = every_flag().to_args();
        args.extend(resumed().to_args());
        for arg in TrainArgs::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if ["help", "version"].contains(&long) {
                continue;
            }
            assert!(
                args.iter().any(|a| *a == format!("--{long}")),
                "--{long} is not written by TrainArgs::to_args"
            );
        }
    }
}
