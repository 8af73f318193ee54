//! Command line of the `evaluate` binary, also used in-process by the experiment driver
//! (which builds an [`EvalArgs`], calls [`crate::run`] and prints
//! [`EvalArgs::shell_command`] so that every number can be reproduced from a shell).

// The fields' doc comments are also the `--help` text, written for a terminal: `<wnid>`,
// `id[@revision]` are placeholders there, not HTML or intra-doc links.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]

use std::path::PathBuf;
use std::str::FromStr;

use clap::{Parser, ValueEnum};
use data::Benchmark;
use relevance::Explainer;

/// Long help: where the datasets are looked for.
const AFTER_HELP: &str = "\
Datasets are looked up under --data-root by their conventional folder names:
  imagenet-val        imagenet/val                      (1000 wnid folders, n01440764/*.JPEG)
  imagenet-v2         imagenetv2-matched-frequency-format-val (folders 0..999)
  imagenet-a          imagenet-a                        (200 wnid folders)
  imagenet-r          imagenet-r                        (200 wnid folders)
  imagenet-sketch     sketch                            (1000 wnid folders)
  objectnet           objectnet-1.0                     (images/<class>/*.png + mappings/)
  si-score-location   si-score/object_location          (class-name folders)
  si-score-rotation   si-score/object_rotation
  si-score-size       si-score/object_size
  imagenet-seg        imagenet-segmentation/gtsegs_ijcv.mat (or gtsegs_ijcv.mat at the root)
Each can be pointed elsewhere with its own flag (--imagenet-a PATH, ...). With --suite all,
robustness or segmentation a dataset that is not there is reported and skipped; a dataset asked
for by name (or by its own flag) must exist.

Suites: all, robustness (the nine classification sets), segmentation (imagenet-seg), si-score
(its three subsets), or dataset names, comma separated. Without --suite: all, unless --folder or
--seg-folder is given, in which case only those run.

Outputs in --out: robustness.csv, segmentation.csv (merged: a re-run replaces its rows),
paper_table.md / paper_table.csv (our numbers beside the paper's and timm's), and
chart_<model>_<protocol>.png (top-1 per dataset, one bar per checkpoint; the paper's sets
first, then the --folder sets in the order given; drawn by runs that include robustness sets).";

/// Which label protocol(s) to score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtocolChoice {
    /// RobustViT's code (imagenet_eval_robustness.py): argmax over 1000 classes, 0.5/0.5,
    /// Resize 256 + CenterCrop 224, ObjectNet's first mapped class, no border crop.
    Paper,
    /// Each benchmark's own evaluation code and each model's own preprocessing; ObjectNet as
    /// ObjectNet's code scores it (1000 logits ranked, any mapped class, no border crop).
    Official,
    /// imagenet-testbed's ObjectNet rule (2-pixel border crop, argmax over the 125 mapped
    /// classes); the other benchmarks as official.
    Testbed,
    /// Paper, then official.
    Both,
    /// paper, official and testbed (testbed rows only where they differ: ObjectNet).
    All,
}

impl ProtocolChoice {
    /// The protocols to run, paper first.
    pub fn protocols(self) -> Vec<data::Protocol> {
        use data::Protocol as P;
        match self {
            Self::Paper => vec![P::Paper],
            Self::Official => vec![P::Official],
            Self::Testbed => vec![P::Testbed],
            Self::Both => vec![P::Paper, P::Official],
            Self::All => P::ALL.to_vec(),
        }
    }
}

/// Inference precision of the classification suite. bf16 is meant for GPUs (on the CPU candle
/// widens bf16 products to f32, which is slower); its rows carry `[bf16]` after the checkpoint
/// so that they never replace f32 rows. Relevance maps (the segmentation suite) need gradients
/// and always run in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dtype {
    /// Single precision (the reference numbers).
    F32,
    /// bfloat16 weights and activations (GPUs).
    Bf16,
}

/// `--folder NAME=PATH`: an extra classification set in ImageNet-val layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderSpec {
    pub name: String,
    pub path: PathBuf,
}

impl FromStr for FolderSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, path) = split_named(s, "NAME=PATH")?;
        Ok(Self {
            name,
            path: PathBuf::from(path),
        })
    }
}

impl std::fmt::Display for FolderSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, self.path.display())
    }
}

/// `--seg-folder NAME=IMAGES_DIR:MASKS_DIR`: images with ImageNet-S-encoded masks of the same
/// relative path and stem (`IMAGES_DIR/<wnid>/x.png` ↔ `MASKS_DIR/<wnid>/x.png`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegFolderSpec {
    pub name: String,
    pub images: PathBuf,
    pub masks: PathBuf,
}

impl FromStr for SegFolderSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, dirs) = split_named(s, "NAME=IMAGES_DIR:MASKS_DIR")?;
        // The last colon separates the two folders, so IMAGES_DIR may hold one (C:\...).
        let (images, masks) = dirs
            .rsplit_once(':')
            .filter(|(i, m)| !i.is_empty() && !m.is_empty())
            .ok_or_else(|| format!("`{s}`: expected NAME=IMAGES_DIR:MASKS_DIR"))?;
        Ok(Self {
            name,
            images: PathBuf::from(images),
            masks: PathBuf::from(masks),
        })
    }
}

impl std::fmt::Display for SegFolderSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}={}:{}",
            self.name,
            self.images.display(),
            self.masks.display()
        )
    }
}

fn split_named(s: &str, form: &str) -> Result<(String, String), String> {
    let (name, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected {form}"))?;
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        return Err(format!(
            "`{name}`: a dataset name is letters, digits, `-`, `_` or `.` (it becomes a CSV value and a file name)"
        ));
    }
    if rest.is_empty() {
        return Err(format!("`{s}`: expected {form}"));
    }
    Ok((name.to_owned(), rest.to_owned()))
}

fn parse_explainer(s: &str) -> Result<Explainer, String> {
    s.parse::<Explainer>().map_err(|e| e.to_string())
}

/// Everything one evaluation needs; `evaluate --help` documents each field.
#[derive(Debug, Clone, PartialEq, Parser)]
#[command(
    name = "evaluate",
    about = "Robustness accuracy and relevance segmentation tests of RobustViT models, into merged CSV tables, a paper comparison table and charts",
    after_help = AFTER_HELP,
    version = report::version(env!("CARGO_PKG_VERSION"))
)]
pub struct EvalArgs {
    /// What to run: all, robustness, segmentation, si-score, or dataset names (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub suite: Vec<String>,
    /// Model name (vit-base, vit-large, augreg-small, augreg-base, augreg-large, deit-small,
    /// deit-base or an alias). Repeat it, paired in order with --checkpoint, to evaluate several.
    #[arg(long)]
    pub model: Vec<String>,
    /// Weights: a .safetensors file, a folder with model.safetensors (+ config.json), a hub
    /// id[@revision], or `pretrained` for the model's original weights. One per --model, or
    /// several for a single --model. Without it, the original weights.
    #[arg(long)]
    pub checkpoint: Vec<String>,
    /// paper (RobustViT's evaluation code), official (each benchmark's own code; ObjectNet:
    /// ObjectNet's), testbed (imagenet-testbed's ObjectNet rule), both (paper + official) or all.
    #[arg(long, value_enum, default_value_t = ProtocolChoice::All)]
    pub protocol: ProtocolChoice,
    /// Folder holding the datasets under their conventional names (see below).
    #[arg(long, default_value = "data")]
    pub data_root: PathBuf,
    /// ImageNet val (default: DATA_ROOT/imagenet/val).
    #[arg(long)]
    pub imagenet_val: Option<PathBuf>,
    /// ImageNet-v2 (default: DATA_ROOT/imagenetv2-matched-frequency-format-val).
    #[arg(long)]
    pub imagenet_v2: Option<PathBuf>,
    /// ImageNet-A (default: DATA_ROOT/imagenet-a).
    #[arg(long)]
    pub imagenet_a: Option<PathBuf>,
    /// ImageNet-R (default: DATA_ROOT/imagenet-r).
    #[arg(long)]
    pub imagenet_r: Option<PathBuf>,
    /// ImageNet-Sketch (default: DATA_ROOT/sketch).
    #[arg(long)]
    pub imagenet_sketch: Option<PathBuf>,
    /// ObjectNet: the objectnet-1.0 folder or its images/ folder (default: DATA_ROOT/objectnet-1.0).
    #[arg(long)]
    pub objectnet: Option<PathBuf>,
    /// SI-Score location (default: DATA_ROOT/si-score/object_location).
    #[arg(long)]
    pub si_score_location: Option<PathBuf>,
    /// SI-Score rotation (default: DATA_ROOT/si-score/object_rotation).
    #[arg(long)]
    pub si_score_rotation: Option<PathBuf>,
    /// SI-Score size (default: DATA_ROOT/si-score/object_size).
    #[arg(long)]
    pub si_score_size: Option<PathBuf>,
    /// ImageNet-Segmentation's gtsegs_ijcv.mat (default:
    /// DATA_ROOT/imagenet-segmentation/gtsegs_ijcv.mat, or DATA_ROOT/gtsegs_ijcv.mat).
    #[arg(long)]
    pub imagenet_seg: Option<PathBuf>,
    /// Extra classification set NAME=PATH in ImageNet-val layout (<wnid>/<image>), labels from
    /// the wnid folder names; images are resized to the model's input size. Repeatable.
    #[arg(long = "folder")]
    pub folders: Vec<FolderSpec>,
    /// Extra segmentation test NAME=IMAGES_DIR:MASKS_DIR with ImageNet-S-encoded PNG masks
    /// (id = R + 256·G; 0 and 1000 are background) of the same relative path. Repeatable.
    #[arg(long = "seg-folder")]
    pub seg_folders: Vec<SegFolderSpec>,
    /// Explainers of the segmentation test (default: all of relevance, raw-attention,
    /// rollout, grad-cam).
    #[arg(long, value_delimiter = ',', value_parser = parse_explainer)]
    pub explainer: Vec<Explainer>,
    /// Output folder of the tables and charts.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Validate the datasets and weights and print what would run, without evaluating.
    #[arg(long)]
    pub check: bool,
    /// With --check: list the files only, without decoding every image.
    #[arg(long, requires = "check")]
    pub check_quick: bool,
    /// At most N images per dataset (spread evenly over the sorted list), for quick trials.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Images per forward pass of the classification suites.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Images per relevance computation of the segmentation test (it keeps every block's
    /// attention and its gradient).
    #[arg(long, default_value_t = 8)]
    pub seg_batch_size: usize,
    /// Image decoding threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// cpu, cuda or auto (the GPU when built with --features cuda and one is present, else the
    /// CPU; the first lines of the output say which and why).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Inference precision of the classification suite (bf16: for GPUs; relevance maps stay f32).
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    pub dtype: Dtype,
    /// The paper's numbers to compare with (default: the copy of
    /// evaluate/settings/paper_results.csv built into the binary).
    #[arg(long)]
    pub paper_results: Option<PathBuf>,
    /// Also write every classified image's top-5 classes and softmax scores to FILE (CSV, one
    /// line per image and rank), to compare single predictions with another implementation.
    #[arg(long, value_name = "FILE")]
    pub predictions: Option<PathBuf>,
    /// No progress bars or progress lines, no `reproduce with` line.
    #[arg(long)]
    pub quiet: bool,
    /// Keep the datasets whose rows --out's tables already hold for the same weights (model,
    /// checkpoint and its sha256, every protocol/explainer) and evaluate only the others: an
    /// interrupted evaluation run again goes on where it stopped.
    #[arg(long)]
    pub resume: bool,
}

impl Default for EvalArgs {
    fn default() -> Self {
        Self::parse_from(["evaluate"])
    }
}

/// One model to evaluate: a paper model name and/or a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    pub name: Option<String>,
    /// None: the model's original weights from the hub.
    pub checkpoint: Option<String>,
}

impl EvalArgs {
    /// Pairs `--model` and `--checkpoint`: equal counts pair in order, one model takes every
    /// checkpoint, no checkpoint means the original weights, no model means the architecture
    /// comes from the `config.json` beside each checkpoint.
    pub fn model_specs(&self) -> Result<Vec<ModelSpec>, String> {
        let ckpt = |c: &String| -> Option<String> { (c != "pretrained").then(|| c.clone()) };
        let (m, c) = (&self.model, &self.checkpoint);
        let specs: Vec<ModelSpec> = match (m.len(), c.len()) {
            (0, 0) => {
                return Err(
                    "nothing to evaluate: give --model NAME and/or --checkpoint WEIGHTS".into(),
                )
            }
            (_, 0) => m
                .iter()
                .map(|n| ModelSpec {
                    name: Some(n.clone()),
                    checkpoint: None,
                })
                .collect(),
            (0, _) => c
                .iter()
                .map(|c| ModelSpec {
                    name: None,
                    checkpoint: ckpt(c),
                })
                .collect(),
            (1, _) => c
                .iter()
                .map(|c| ModelSpec {
                    name: Some(m[0].clone()),
                    checkpoint: ckpt(c),
                })
                .collect(),
            (a, b) if a == b => m
                .iter()
                .zip(c)
                .map(|(n, c)| ModelSpec {
                    name: Some(n.clone()),
                    checkpoint: ckpt(c),
                })
                .collect(),
            (a, b) => {
                return Err(format!(
                    "{a} --model but {b} --checkpoint: give one checkpoint per model (in order; \
                     `pretrained` for the original weights), or one model for all checkpoints"
                ))
            }
        };
        if specs
            .iter()
            .any(|s| s.name.is_none() && s.checkpoint.is_none())
        {
            return Err(
                "--checkpoint pretrained needs a --model: which model's original weights?".into(),
            );
        }
        Ok(specs)
    }

    /// The per-dataset path flag of a benchmark, if given.
    pub fn benchmark_path(&self, b: Benchmark) -> Option<&PathBuf> {
        match b {
            Benchmark::ImageNetVal => self.imagenet_val.as_ref(),
            Benchmark::ImageNetV2 => self.imagenet_v2.as_ref(),
            Benchmark::ImageNetA => self.imagenet_a.as_ref(),
            Benchmark::ImageNetR => self.imagenet_r.as_ref(),
            Benchmark::Sketch => self.imagenet_sketch.as_ref(),
            Benchmark::ObjectNet => self.objectnet.as_ref(),
            Benchmark::SiScoreLocation => self.si_score_location.as_ref(),
            Benchmark::SiScoreRotation => self.si_score_rotation.as_ref(),
            Benchmark::SiScoreSize => self.si_score_size.as_ref(),
        }
    }

    /// The explainers of the segmentation test (all when none is given).
    pub fn explainers(&self) -> Vec<Explainer> {
        if self.explainer.is_empty() {
            Explainer::ALL.to_vec()
        } else {
            self.explainer.clone()
        }
    }

    /// The arguments (after the program name) that reproduce these settings; defaults are
    /// left out. `EvalArgs::parse_from(["evaluate"].chain(args))` gives `self` back.
    pub fn to_args(&self) -> Vec<String> {
        let d = Self::default();
        let mut a: Vec<String> = Vec::new();
        let mut push = |flag: &str, v: String| {
            a.push(format!("--{flag}"));
            a.push(v);
        };
        if !self.suite.is_empty() {
            push("suite", self.suite.join(","));
        }
        for m in &self.model {
            push("model", m.clone());
        }
        for c in &self.checkpoint {
            push("checkpoint", c.clone());
        }
        if self.protocol != d.protocol {
            push(
                "protocol",
                self.protocol
                    .to_possible_value()
                    .expect("no skipped variants")
                    .get_name()
                    .to_owned(),
            );
        }
        if self.data_root != d.data_root {
            push("data-root", self.data_root.display().to_string());
        }
        let paths = [
            ("imagenet-val", &self.imagenet_val),
            ("imagenet-v2", &self.imagenet_v2),
            ("imagenet-a", &self.imagenet_a),
            ("imagenet-r", &self.imagenet_r),
            ("imagenet-sketch", &self.imagenet_sketch),
            ("objectnet", &self.objectnet),
            ("si-score-location", &self.si_score_location),
            ("si-score-rotation", &self.si_score_rotation),
            ("si-score-size", &self.si_score_size),
            ("imagenet-seg", &self.imagenet_seg),
        ];
        for (flag, p) in paths {
            if let Some(p) = p {
                push(flag, p.display().to_string());
            }
        }
        for f in &self.folders {
            push("folder", f.to_string());
        }
        for f in &self.seg_folders {
            push("seg-folder", f.to_string());
        }
        if !self.explainer.is_empty() {
            let names: Vec<&str> = self.explainer.iter().map(|e| e.name()).collect();
            push("explainer", names.join(","));
        }
        if self.out != d.out {
            push("out", self.out.display().to_string());
        }
        if let Some(n) = self.limit {
            push("limit", n.to_string());
        }
        if self.batch_size != d.batch_size {
            push("batch-size", self.batch_size.to_string());
        }
        if self.seg_batch_size != d.seg_batch_size {
            push("seg-batch-size", self.seg_batch_size.to_string());
        }
        if self.threads != d.threads {
            push("threads", self.threads.to_string());
        }
        if self.device != d.device {
            push("device", self.device.clone());
        }
        if self.dtype != d.dtype {
            push(
                "dtype",
                self.dtype
                    .to_possible_value()
                    .expect("no skipped variants")
                    .get_name()
                    .to_owned(),
            );
        }
        if let Some(p) = &self.paper_results {
            push("paper-results", p.display().to_string());
        }
        if let Some(p) = &self.predictions {
            push("predictions", p.display().to_string());
        }
        if self.check_quick {
            a.push("--check-quick".into());
        }
        if self.check {
            a.push("--check".into());
        }
        if self.quiet {
            a.push("--quiet".into());
        }
        if self.resume {
            a.push("--resume".into());
        }
        a
    }

    /// The shell command that runs this evaluation from the workspace root.
    pub fn shell_command(&self) -> String {
        report::command_line("cargo run --release -p evaluate --", &self.to_args())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use report::shell_quote;

    fn parse(args: &[&str]) -> EvalArgs {
        EvalArgs::try_parse_from(std::iter::once("evaluate").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn model_checkpoint_pairing() {
        let spec = |n: Option<&str>, c: Option<&str>| ModelSpec {
            name: n.map(String::from),
            checkpoint: c.map(String::from),
        };
        let a = parse(&["--model", "ar-b"]);
        assert_eq!(a.model_specs().unwrap(), vec![spec(Some("ar-b"), None)]);
        let a = parse(&[
            "--model",
            "ar-b",
            "--checkpoint",
            "pretrained",
            "--checkpoint",
            "run/best.safetensors",
        ]);
        assert_eq!(
            a.model_specs().unwrap(),
            vec![
                spec(Some("ar-b"), None),
                spec(Some("ar-b"), Some("run/best.safetensors"))
            ]
        );
        let a = parse(&[
            "--model",
            "vit-b",
            "--checkpoint",
            "a",
            "--model",
            "deit-s",
            "--checkpoint",
            "b",
        ]);
        assert_eq!(
            a.model_specs().unwrap(),
            vec![
                spec(Some("vit-b"), Some("a")),
                spec(Some("deit-s"), Some("b"))
            ]
        );
        let a = parse(&["--checkpoint", "runs/x"]);
        assert_eq!(a.model_specs().unwrap(), vec![spec(None, Some("runs/x"))]);
        let a = parse(&[
            "--model",
            "a",
            "--model",
            "b",
            "--checkpoint",
            "x",
            "--checkpoint",
            "y",
            "--checkpoint",
            "z",
        ]);
        assert!(a.model_specs().unwrap_err().contains("2 --model but 3"));
        assert!(parse(&[]).model_specs().is_err());
        assert!(parse(&["--checkpoint", "pretrained"])
            .model_specs()
            .unwrap_err()
            .contains("needs a --model"));
    }

    #[test]
    fn folder_specs_parse() {
        let f: FolderSpec = "bench=/tmp/x/test".parse().unwrap();
        assert_eq!(f.name, "bench");
        assert_eq!(f.path, PathBuf::from("/tmp/x/test"));
        let s: SegFolderSpec = "id=/d/id:/d/id-masks".parse().unwrap();
        assert_eq!(
            (s.name.as_str(), s.images.to_str(), s.masks.to_str()),
            ("id", Some("/d/id"), Some("/d/id-masks"))
        );
        assert!("nopath".parse::<FolderSpec>().is_err());
        assert!("a b=/x".parse::<FolderSpec>().is_err());
        assert!("x=/only-one".parse::<SegFolderSpec>().is_err());
    }

    #[test]
    fn args_round_trip_through_the_shell_command() {
        let a = parse(&[
            "--suite",
            "imagenet-a,objectnet",
            "--model",
            "ar-b",
            "--checkpoint",
            "pretrained",
            "--checkpoint",
            "my run/best.safetensors",
            "--protocol",
            "official",
            "--folder",
            "id=/b/id",
            "--seg-folder",
            "id=/b/id:/b/id-masks",
            "--explainer",
            "relevance,rollout",
            "--limit",
            "10",
            "--out",
            "/tmp/o",
            "--quiet",
            "--device",
            "cpu",
        ]);
        let back =
            EvalArgs::try_parse_from(std::iter::once("evaluate".to_string()).chain(a.to_args()))
                .unwrap();
        assert_eq!(back, a);
        let cmd = a.shell_command();
        assert!(
            cmd.starts_with("cargo run --release -p evaluate -- --suite imagenet-a,objectnet"),
            "{cmd}"
        );
        assert!(
            cmd.contains("--checkpoint 'my run/best.safetensors'"),
            "{cmd}"
        );
        assert_eq!(EvalArgs::default().to_args(), Vec::<String>::new());
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }

    /// A flag added to `evaluate` without a line in `to_args` would be dropped from every
    /// printed command; this names it.
    #[test]
    fn to_args_writes_every_flag() {
        let p = |s: &str| Some(PathBuf::from(s));
        let a = EvalArgs {
            suite: vec!["all".into()],
            model: vec!["vit-b".into()],
            checkpoint: vec!["pretrained".into()],
            protocol: ProtocolChoice::Testbed,
            data_root: PathBuf::from("/d"),
            imagenet_val: p("/v"),
            imagenet_v2: p("/v2"),
            imagenet_a: p("/a"),
            imagenet_r: p("/r"),
            imagenet_sketch: p("/s"),
            objectnet: p("/o"),
            si_score_location: p("/l"),
            si_score_rotation: p("/ro"),
            si_score_size: p("/si"),
            imagenet_seg: p("/g.mat"),
            folders: vec!["x=/x".parse().unwrap()],
            seg_folders: vec!["y=/y:/ym".parse().unwrap()],
            explainer: vec![Explainer::Rollout],
            out: PathBuf::from("/out"),
            check: true,
            check_quick: true,
            limit: Some(3),
            batch_size: 2,
            seg_batch_size: 1,
            threads: 4,
            device: "cpu".into(),
            dtype: Dtype::Bf16,
            paper_results: p("/p.csv"),
            predictions: p("/pred.csv"),
            quiet: true,
            resume: true,
        };
        let args = a.to_args();
        let back =
            EvalArgs::try_parse_from(std::iter::once("evaluate".to_string()).chain(args.clone()))
                .unwrap();
        assert_eq!(back, a);
        for arg in EvalArgs::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if ["help", "version"].contains(&long) {
                continue;
            }
            assert!(
                args.iter().any(|a| *a == format!("--{long}")),
                "--{long} is not written by EvalArgs::to_args"
            );
        }
    }

    #[test]
    fn dtype_choices_are_f32_and_bf16() {
        assert!(EvalArgs::try_parse_from(["evaluate", "--dtype", "f16"]).is_err());
        assert_eq!(parse(&["--dtype", "f32"]).dtype, Dtype::F32);
        assert_eq!(parse(&["--dtype", "bf16"]).dtype, Dtype::Bf16);
    }
}
