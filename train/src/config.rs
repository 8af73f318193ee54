//! The resolved configuration of a training run: the paper's settings for the chosen model
//! (data in `train/settings/paper.json`), overridden by flags, written to the run folder.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The paper's settings, embedded from `train/settings/paper.json` (beside the code that parses
/// them, so that this crate builds and packages alone); the experiment driver reads them
/// through this crate.
pub const PAPER_SETTINGS: &str = include_str!("../settings/paper.json");

#[derive(Debug, Clone, Deserialize)]
pub struct PaperSettings {
    pub common: Common,
    pub models: BTreeMap<String, ModelSettings>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Common {
    pub epochs: usize,
    pub batch_size: usize,
    pub val_batch_size: usize,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub lr_decay: f64,
    pub lr_decay_every: usize,
    pub lambda_seg: f64,
    pub lambda_cls: f64,
    pub lambda_bg: f64,
    pub lambda_fg: f64,
    pub train_classes: usize,
    pub train_per_class: usize,
    pub val_per_class: usize,
    pub mask_mode: String,
    pub objective: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModelSettings {
    pub lr: f64,
    pub temperature: f64,
}

impl PaperSettings {
    pub fn load() -> Self {
        serde_json::from_str(PAPER_SETTINGS).expect("train/settings/paper.json is valid")
    }
}

/// What the run optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// The paper: relevance loss (background + foreground) + self-prediction cross-entropy.
    Relevance,
    /// Plain cross-entropy on ground-truth labels (the natural baseline; also pretraining).
    Ce,
}

/// How the learning rate moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// `lr * decay^(epoch / every)`, set at the start of each epoch (the paper).
    Step,
    /// PyTorch's OneCycleLR (div_factor 25, final_div_factor 1e4): cosine from lr/25 up to lr
    /// over the first 10 % of steps, then cosine down to lr/2.5e5, with Adam's β₁ cycled
    /// 0.95 → 0.85 → 0.95 against it (from-scratch pretraining).
    Onecycle,
    /// --lr throughout.
    Constant,
}

/// Image preparation for training and validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Transform {
    /// The paper: train = resize to 256x256, random 224 crop, flip; val = resize 256, centre
    /// crop 224 (scaled to the model's input size).
    Paper,
    /// Images already have the model's input size: only normalise (the embedded benchmark).
    None,
}

/// Everything that determines a run. Written to `config.json` before the first step; a resumed
/// run must have the same values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub model: Option<String>,
    pub weights: Option<String>,
    /// Architecture of a model built from a config (`--arch`): random, or `weights` without one.
    pub arch: Option<model::VitConfig>,
    pub objective: Objective,
    pub lr: f64,
    pub temperature: f64,
    pub epochs: usize,
    pub batch_size: usize,
    pub val_batch_size: usize,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub schedule: Schedule,
    pub lr_decay: f64,
    pub lr_decay_every: usize,
    pub lambda_seg: f64,
    pub lambda_cls: f64,
    pub lambda_bg: f64,
    pub lambda_fg: f64,
    pub mask_mode: String,
    pub train_classes: usize,
    pub train_per_class: usize,
    pub val_per_class: usize,
    pub limit_classes: Option<usize>,
    pub max_steps: Option<usize>,
    pub seed: u64,
    pub transform: Transform,
    /// Normalisation of the inputs (0.5/0.5 for every model in the paper's code).
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub imagenet: Option<PathBuf>,
    pub imagenet_s: Option<PathBuf>,
    pub val_imagenet: Option<PathBuf>,
    pub val_imagenet_s: Option<PathBuf>,
    pub train_folder: Option<PathBuf>,
    pub val_folder: Option<PathBuf>,
    pub split_file: Option<PathBuf>,
    pub log_every: usize,
    pub vis_images: usize,
    /// Strips are drawn every this many epochs (and after the last one).
    pub vis_every: usize,
}

impl TrainConfig {
    /// Settings that would otherwise surface much later as a NaN loss or an empty run.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (c, (m, s)) in self.mean.iter().zip(&self.std).enumerate() {
            if !m.is_finite() {
                anyhow::bail!(
                    "--mean {:?}: channel {c} is {m}; give three finite numbers, e.g. --mean 0.5,0.5,0.5",
                    self.mean
                );
            }
            if !(s.is_finite() && *s > 0.0) {
                anyhow::bail!(
                    "--std {:?}: channel {c} is {s}; the inputs are divided by it, so give three positive numbers, e.g. --std 0.5,0.5,0.5",
                    self.std
                );
            }
        }
        if self.batch_size == 0 || self.val_batch_size == 0 {
            anyhow::bail!("--batch-size and --val-batch-size must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            anyhow::bail!("--lr {} must be a finite number, not negative", self.lr);
        }
        if let Some(a) = &self.arch {
            a.validate()?;
        }
        Ok(())
    }
}
