//! The embedded benchmark: the paper's problem in miniature, on a CPU, with no downloads.
//!
//! A small ViT is pretrained from scratch on a synthetic dataset with a planted background
//! shortcut, then finetuned on 3 masked images per class with the relevance loss and, as the
//! control, with plain cross-entropy. All three are evaluated on shifted test sets and on
//! relevance/mask agreement. Every stage goes through the real `train` and `evaluate` code on
//! data written in the real datasets' layouts; each stage's command line is printed.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

use evaluate::{EvalArgs, FolderSpec, ProtocolChoice, SegFolderSpec};
use relevance::Explainer;
use train::{Objective, Schedule, TrainArgs, Transform};

use crate::shortcut_data::{self, SynthConfig};

/// The benchmark's settings, data in `experiments/settings/demo.json`.
pub const DEMO_SETTINGS: &str = include_str!("../settings/demo.json");

#[derive(Debug, Clone, Deserialize)]
pub struct DemoSettings {
    pub model: ModelDims,
    /// The dataset of every seed; each run sets its own `seed`.
    pub data: SynthConfig,
    pub pretrain: Stage,
    pub finetune: FinetuneStage,
    pub segmentation_images: usize,
    pub variants: std::collections::BTreeMap<String, Variant>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModelDims {
    pub img_size: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub mlp_hidden: usize,
    pub num_classes: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Stage {
    pub lr: f64,
    pub weight_decay: f64,
    pub schedule: Schedule,
    pub batch_size: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FinetuneStage {
    pub lr: f64,
    pub weight_decay: f64,
    pub schedule: Schedule,
    pub batch_size: usize,
    pub steps: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Variant {
    pub patch_size: usize,
    pub pretrain_epochs: usize,
    pub seeds: Vec<u64>,
}

impl DemoSettings {
    pub fn load() -> Self {
        serde_json::from_str(DEMO_SETTINGS).expect("experiments/settings/demo.json is valid")
    }

    pub fn arch(&self, patch: usize) -> model::VitConfig {
        let m = &self.model;
        let mut c = model::VitConfig::vit(m.embed_dim, m.depth, m.num_heads, m.img_size, patch);
        c.mlp_hidden = m.mlp_hidden;
        c.num_classes = m.num_classes;
        c
    }

    pub fn synth(&self, seed: u64) -> SynthConfig {
        SynthConfig {
            seed,
            ..self.data.clone()
        }
    }
}

/// The three models of each seed.
pub const MODELS: [&str; 3] = ["pretrained", "ce-finetuned", "rel-finetuned"];

/// Options of `experiments demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// The short variant (patch 8, one seed, under two minutes): what CI runs.
    #[arg(long)]
    pub quick: bool,
    /// Output folder for data, runs, tables and pictures.
    #[arg(long, default_value = "results/demo")]
    pub out: PathBuf,
    /// Seeds to run (default: the variant's).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<u64>>,
    /// Fewer training images (for tests); the default is the design's 4000.
    #[arg(long, hide = true)]
    pub n_train: Option<usize>,
    /// Fewer test images per set (for tests); the default is the design's 1000.
    #[arg(long, hide = true)]
    pub n_test: Option<usize>,
    /// Print the stage commands only.
    #[arg(long)]
    pub dry_run: bool,
    /// Device of every stage: cpu (the default: the benchmark is sized for a CPU), cuda, or
    /// auto (the GPU when built with --features cuda and one is present).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Runs `train` in-process with these arguments, printing the equivalent command. A finished
/// run is kept; an interrupted one is resumed; a finished one whose weights are missing (a fresh
/// clone of the repository has the runs' records but not their git-ignored weights) is trained
/// again.
pub fn run_train(mut a: TrainArgs, dry_run: bool) -> Result<()> {
    println!("$ {}", a.shell_command());
    if dry_run {
        return Ok(());
    }
    let out = a.out.clone().context("a demo stage names its run folder")?;
    let state = out.join("state.json");
    if let Ok(text) = std::fs::read_to_string(&state) {
        let st: train::run_dir::RunState = serde_json::from_str(&text)?;
        let weights = out.join("last.safetensors");
        if st.finished && weights.is_file() {
            println!("  (already finished: {})", out.display());
            return Ok(());
        }
        if st.finished {
            println!("  ({} is missing: training again)", weights.display());
            a.force = true;
        } else {
            a.resume = Some(out);
        }
    } else if out.join("config.json").exists() {
        a.force = true;
    }
    train::execute(&a)?;
    Ok(())
}

/// Training runs of one seed (pretraining, relevance finetune, CE finetune), each into its
/// folder under `runs`.
pub fn stage_commands(
    st: &DemoSettings,
    v: &Variant,
    seed: u64,
    data: &Path,
    runs: &Path,
    arch: &Path,
    device: &str,
) -> Vec<TrainArgs> {
    let pre = runs.join("pretrained");
    let common = |out: &Path| TrainArgs {
        arch: Some(arch.to_path_buf()),
        transform: Some(Transform::None),
        seed,
        device: device.into(),
        quiet: true,
        out: Some(out.to_path_buf()),
        log_every: 10,
        ..TrainArgs::default()
    };
    let p = &st.pretrain;
    let pretrain = TrainArgs {
        objective: Some(Objective::Ce),
        train_folder: Some(data.join("train")),
        lr: Some(p.lr),
        weight_decay: Some(p.weight_decay),
        schedule: Some(p.schedule),
        batch_size: Some(p.batch_size),
        epochs: Some(v.pretrain_epochs),
        vis_images: 0,
        ..common(&pre)
    };
    let f = &st.finetune;
    let per_epoch = (st.data.classes * st.data.finetune_per_class).div_ceil(f.batch_size);
    let epochs = f.steps.div_ceil(per_epoch);
    let finetune = |objective: Objective, out: &Path| TrainArgs {
        objective: Some(objective),
        weights: Some(pre.join("last.safetensors").display().to_string()),
        imagenet: Some(data.join("finetune/images")),
        imagenet_s: Some(data.join("finetune/masks")),
        val_imagenet: Some(data.join("finetune-val/images")),
        val_imagenet_s: Some(data.join("finetune-val/masks")),
        train_per_class: Some(st.data.finetune_per_class),
        val_per_class: Some(st.data.finetune_val_per_class),
        lr: Some(f.lr),
        weight_decay: Some(f.weight_decay),
        schedule: Some(f.schedule),
        batch_size: Some(f.batch_size),
        epochs: Some(epochs),
        max_steps: Some(f.steps),
        vis_images: 4,
        vis_every: 1000,
        ..common(out)
    };
    vec![
        pretrain,
        finetune(Objective::Relevance, &runs.join("rel-finetuned")),
        finetune(Objective::Ce, &runs.join("ce-finetuned")),
    ]
}

/// Runs `evaluate` in-process with these arguments, printing the equivalent command.
pub fn run_eval(a: &EvalArgs, dry_run: bool) -> Result<evaluate::RunSummary> {
    println!("$ {}", a.shell_command());
    if dry_run {
        return Ok(evaluate::RunSummary::default());
    }
    evaluate::run(a)
}

/// Evaluations of one seed: accuracy on every test set, then relevance/mask agreement on
/// `segmentation_images` images of the id and bg_swap sets.
pub fn eval_commands(
    st: &DemoSettings,
    data: &Path,
    runs: &Path,
    out: &Path,
    device: &str,
) -> Vec<EvalArgs> {
    let test = data.join("test");
    let common = EvalArgs {
        checkpoint: MODELS
            .iter()
            .map(|m| runs.join(m).join("last.safetensors").display().to_string())
            .collect(),
        protocol: ProtocolChoice::Paper,
        device: device.into(),
        quiet: true,
        out: out.to_path_buf(),
        ..EvalArgs::default()
    };
    let acc = EvalArgs {
        folders: shortcut_data::TestSet::ALL
            .iter()
            .map(|set| FolderSpec {
                name: set.name().into(),
                path: test.join(set.name()),
            })
            .collect(),
        ..common.clone()
    };
    let seg = EvalArgs {
        seg_folders: [shortcut_data::TestSet::Id, shortcut_data::TestSet::BgSwap]
            .iter()
            .map(|set| SegFolderSpec {
                name: set.name().into(),
                images: test.join(set.name()),
                masks: test.join(format!("{}-masks", set.name())),
            })
            .collect(),
        explainer: vec![Explainer::Relevance],
        limit: Some(st.segmentation_images),
        ..common
    };
    vec![acc, seg]
}

/// The benchmark, end to end.
pub fn run(args: &DemoArgs) -> Result<()> {
    let t0 = Instant::now();
    let st = DemoSettings::load();
    let vname = if args.quick { "quick" } else { "full" };
    let v = st
        .variants
        .get(vname)
        .context("variant missing from demo.json")?
        .clone();
    let seeds = args.seeds.clone().unwrap_or_else(|| v.seeds.clone());
    if seeds.is_empty() {
        bail!("--seeds is empty");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let arch_path = args.out.join(format!("arch-p{}.json", v.patch_size));
    evaluate::results::write_atomic(
        &arch_path,
        serde_json::to_string_pretty(&st.arch(v.patch_size))?.as_bytes(),
    )?;
    for &seed in &seeds {
        let mut sc = st.synth(seed);
        if let Some(n) = args.n_train {
            sc.n_train = n;
        }
        if let Some(n) = args.n_test {
            sc.n_test = n;
        }
        let data = args.out.join("data").join(format!("seed-{seed}"));
        let t = Instant::now();
        if !args.dry_run {
            shortcut_data::write_layout(&data, &sc)?;
        }
        println!(
            "seed {seed}: data in {} ({:.1} s)",
            data.display(),
            t.elapsed().as_secs_f64()
        );
        let runs = args.out.join("runs").join(format!("{vname}-seed-{seed}"));
        for stage in stage_commands(&st, &v, seed, &data, &runs, &arch_path, &args.device) {
            let t = Instant::now();
            let out = stage.out.clone().unwrap_or_default();
            run_train(stage, args.dry_run)?;
            println!("  {} ({:.1} s)", out.display(), t.elapsed().as_secs_f64());
        }
        let t = Instant::now();
        let eval_out = args.out.join("eval").join(format!("{vname}-seed-{seed}"));
        for e in eval_commands(&st, &data, &runs, &eval_out, &args.device) {
            run_eval(&e, args.dry_run)?;
        }
        println!("  evaluation ({:.1} s)", t.elapsed().as_secs_f64());
    }
    if args.dry_run {
        return Ok(());
    }
    // The full variant's report is the benchmark's headline, at the top; another variant's goes
    // into its own folder so that a quick run never overwrites the full tables.
    let dest = match vname {
        "full" => args.out.clone(),
        other => args.out.join(other),
    };
    let secs = t0.elapsed().as_secs_f64();
    let summary = crate::demo_report::write(&args.out, &dest, vname, &seeds, secs)?;
    println!("\n{summary}");
    println!(
        "demo finished in {:.1} s; tables and pictures in {}",
        t0.elapsed().as_secs_f64(),
        dest.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The printed stage commands, read back by the binaries' own parsers, are the values the
    /// demo runs in-process.
    #[test]
    fn printed_stages_parse_back_to_what_runs() {
        let st = DemoSettings::load();
        let d = Path::new("/demo");
        for (name, v) in &st.variants {
            let runs = d.join("runs").join(name);
            let stages =
                stage_commands(&st, v, 3, &d.join("data"), &runs, &d.join("a.json"), "cpu");
            assert_eq!(stages.len(), 3);
            for t in stages {
                let back = TrainArgs::try_parse_from(
                    std::iter::once("train".to_string()).chain(t.to_args()),
                )
                .unwrap();
                assert_eq!(back, t);
            }
            for e in eval_commands(&st, &d.join("data"), &runs, &d.join("eval"), "cpu") {
                let back = EvalArgs::try_parse_from(
                    std::iter::once("evaluate".to_string()).chain(e.to_args()),
                )
                .unwrap();
                assert_eq!(back, e);
            }
        }
    }
}
