//! The run folder: configuration, metrics, checkpoints, and resuming.
//!
//! Every file is written atomically (temporary file + rename). The checkpoint is three files
//! (`last.safetensors`, `optimizer.safetensors`, `state.json`) that all carry the epoch they
//! belong to, so a resume can tell a consistent checkpoint from one cut by a crash.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::TrainConfig;

/// Progress that must survive an interruption.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Epochs fully completed (the next epoch to run).
    pub epochs_done: usize,
    pub global_step: usize,
    pub best_val_loss: Option<f64>,
    pub best_epoch: Option<usize>,
    /// The run's seed; every random stream (data order, crops, flips) is derived from
    /// (seed, epoch, index), so this and `epochs_done` are the whole RNG state.
    pub seed: u64,
    /// Original-model validation figures, computed once.
    pub original_val: Option<ValFigures>,
    pub finished: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ValFigures {
    pub loss: f64,
    pub top1: f64,
    pub top5: f64,
}

pub struct RunDir {
    pub path: PathBuf,
}

/// Writes bytes atomically ([`model::weights::write_atomic`]), naming the file on failure.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    model::weights::write_atomic(path, bytes).with_context(|| format!("writing {}", path.display()))
}

impl RunDir {
    /// A new run: refuses a folder that already holds a run unless `force`.
    pub fn create(path: &Path, force: bool) -> Result<Self> {
        Self::ensure_free(path, force)?;
        if force && path.exists() {
            // Everything the run owns, its split and strips included: a forced run with new
            // options must not inherit the old run's data.
            for f in [
                "config.json",
                "state.json",
                "metrics.csv",
                "last.safetensors",
                "optimizer.safetensors",
                "last.next.safetensors",
                "optimizer.next.safetensors",
                "best.safetensors",
                "split.json",
            ] {
                match std::fs::remove_file(path.join(f)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).with_context(|| {
                            format!("--force cannot remove {}", path.join(f).display())
                        })
                    }
                    _ => {}
                }
            }
            let strips = path.join("strips");
            if strips.is_dir() {
                std::fs::remove_dir_all(&strips)
                    .with_context(|| format!("--force cannot remove {}", strips.display()))?;
            }
        }
        std::fs::create_dir_all(path.join("strips"))
            .with_context(|| format!("creating run folder {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// Refuses a folder that already holds a run unless `force`.
    pub fn ensure_free(path: &Path, force: bool) -> Result<()> {
        if path.join("config.json").exists() && !force {
            bail!(
                "{} already holds a run: continue it with --resume {}, or overwrite it with --force",
                path.display(),
                path.display()
            );
        }
        Ok(())
    }

    /// An existing run to continue.
    pub fn open(path: &Path) -> Result<(Self, TrainConfig, RunState)> {
        let cfg_path = path.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).with_context(|| {
            format!(
                "{} is not a run folder (no readable config.json)",
                path.display()
            )
        })?;
        let cfg: TrainConfig = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid run configuration", cfg_path.display()))?;
        // Interrupted before the first epoch ended (no state yet): start over in the same folder.
        let state = read_state(path)?.unwrap_or_else(|| RunState::new(cfg.seed));
        std::fs::create_dir_all(path.join("strips"))?;
        Ok((
            Self {
                path: path.to_path_buf(),
            },
            cfg,
            state,
        ))
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn write_config(&self, cfg: &TrainConfig) -> Result<()> {
        write_atomic(
            &self.file("config.json"),
            serde_json::to_string_pretty(cfg)?.as_bytes(),
        )
    }

    pub fn write_state(&self, st: &RunState) -> Result<()> {
        write_atomic(
            &self.file("state.json"),
            serde_json::to_string_pretty(st)?.as_bytes(),
        )
    }
}

impl RunState {
    pub fn new(seed: u64) -> Self {
        Self {
            epochs_done: 0,
            global_step: 0,
            best_val_loss: None,
            best_epoch: None,
            seed,
            original_val: None,
            finished: false,
        }
    }
}

/// One row of `metrics.csv`: a logged step (`kind = step`) or an epoch summary (`kind = epoch`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetricsRow {
    pub kind: String,
    pub epoch: usize,
    pub step: usize,
    pub lr: f64,
    pub loss: f64,
    pub background: f64,
    pub foreground: f64,
    pub classification: f64,
    pub val_loss: Option<f64>,
    pub val_top1: Option<f64>,
    pub val_top5: Option<f64>,
    pub orig_top1: Option<f64>,
    pub orig_top5: Option<f64>,
    pub images_per_s: f64,
    pub degenerate_maps: usize,
}

/// Appends rows to `metrics.csv`. On resume, rows of epochs after the checkpoint (written
/// before a crash) are dropped first so the file reads as if the run was never interrupted.
pub struct Metrics {
    path: PathBuf,
}

impl Metrics {
    pub fn open(path: &Path, keep_epochs_below: usize) -> Result<Self> {
        if path.exists() {
            let mut text =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            // Rows are appended; a crash mid-append leaves a last line without its newline.
            // That row is dropped (its epoch runs again) rather than blocking the resume.
            if !text.is_empty() && !text.ends_with(b"\n") {
                let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                text.truncate(keep);
            }
            let mut rdr = csv::Reader::from_reader(text.as_slice());
            let rows: Vec<MetricsRow> = rdr
                .deserialize()
                .collect::<std::result::Result<_, _>>()
                .with_context(|| format!("{} is corrupt", path.display()))?;
            let kept: Vec<MetricsRow> = rows
                .into_iter()
                .filter(|r| r.epoch < keep_epochs_below)
                .collect();
            let mut w = csv::Writer::from_writer(Vec::new());
            for r in &kept {
                w.serialize(r)?;
            }
            if kept.is_empty() {
                std::fs::remove_file(path)?;
            } else {
                write_atomic(path, &w.into_inner()?)?;
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    pub fn append(&self, row: &MetricsRow) -> Result<()> {
        let new = !self.path.exists();
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        let mut w = csv::WriterBuilder::new().has_headers(new).from_writer(f);
        w.serialize(row)?;
        w.flush()?;
        Ok(())
    }
}

/// Reads the whole metrics file (for tests and reports).
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsRow>> {
    let mut rdr =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(rdr.deserialize().collect::<std::result::Result<_, _>>()?)
}

/// Flushes stdout so progress lines interleave correctly with the progress bar.
pub fn flush() {
    let _ = std::io::stdout().flush();
}

/// What `--resume-or-start` does with its run folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOrResume {
    /// No run there yet: start one.
    Start,
    /// A run of the same configuration that cannot be continued (it stopped while saving a
    /// checkpoint, or its finished weights are gone): start it over in place.
    Restart,
    /// A run of the same configuration stopped after a finished epoch: continue it.
    Resume,
    /// The same run, finished, with its weights: nothing to do.
    Finished,
}

/// The run's `state.json`; `None` when there is none yet (the run stopped before its first
/// epoch ended). A file that is there but does not parse is an error, never a fresh start.
fn read_state(path: &Path) -> Result<Option<RunState>> {
    let st_path = path.join("state.json");
    let Ok(text) = std::fs::read_to_string(&st_path) else {
        return Ok(None);
    };
    serde_json::from_str(&text).map(Some).with_context(|| {
        format!(
            "{} is corrupt; delete the run folder or start again with --force",
            st_path.display()
        )
    })
}

/// Decides how a job that may have been killed and started again (a requeued cluster task)
/// carries on in `path`, so that it ends with the weights of an uninterrupted run. A folder
/// holding a run of another configuration is an error: it is never overwritten silently.
pub fn start_or_resume(path: &Path, wanted: &TrainConfig) -> Result<StartOrResume> {
    let cfg_path = path.join("config.json");
    let Ok(text) = std::fs::read_to_string(&cfg_path) else {
        return Ok(StartOrResume::Start);
    };
    let stored: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid run configuration", cfg_path.display()))?;
    // Through the same text both ways, so that equal numbers compare equal.
    let wanted: serde_json::Value = serde_json::from_str(&serde_json::to_string_pretty(wanted)?)?;
    if stored != wanted {
        let differing: Vec<String> = match (&stored, &wanted) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => b
                .iter()
                .filter(|(k, v)| a.get(*k) != Some(*v))
                .map(|(k, _)| k.clone())
                .collect(),
            _ => Vec::new(),
        };
        bail!(
            "{} holds a run of another configuration (differs in: {}): give another --out, or overwrite it with --force",
            path.display(),
            differing.join(", ")
        );
    }
    // Stopped before its first epoch ended: `RunDir::open` starts it over in place.
    let Some(state) = read_state(path)? else {
        return Ok(StartOrResume::Resume);
    };
    let last = path.join("last.safetensors");
    if state.finished {
        let complete = last.is_file() && path.join("best.safetensors").is_file();
        return Ok(if complete {
            StartOrResume::Finished
        } else {
            StartOrResume::Restart
        });
    }
    promote_checkpoint(path, &state)?;
    // Weights that do not belong to state.json cannot be resumed; the run is repeated.
    let tag = file_tag(&last, crate::trainer::EPOCHS_KEY);
    Ok(if tag == Some(state.epochs_done) {
        StartOrResume::Resume
    } else {
        StartOrResume::Restart
    })
}

/// The checkpoint file `name` while the next epoch's copy is written beside it.
pub fn next_file(name: &str) -> String {
    format!("{}.next.safetensors", name.trim_end_matches(".safetensors"))
}

/// A number in a safetensors file's metadata.
fn file_tag(path: &Path, key: &str) -> Option<usize> {
    model::weights::read_metadata(path)
        .ok()?
        .get(key)?
        .parse()
        .ok()
}

/// A checkpoint is written as `last.next.safetensors` and `optimizer.next.safetensors`, then
/// committed by `state.json`, then renamed over the previous epoch's files, so a kill at any
/// moment leaves one whole checkpoint. This completes the renames of a checkpoint that
/// `state.json` committed, and removes next files it never committed.
pub fn promote_checkpoint(path: &Path, state: &RunState) -> Result<()> {
    for (name, key, committed) in [
        (
            "last.safetensors",
            crate::trainer::EPOCHS_KEY,
            state.epochs_done,
        ),
        ("optimizer.safetensors", "step", state.global_step),
    ] {
        let next = path.join(next_file(name));
        if !next.exists() {
            continue;
        }
        if file_tag(&next, key) == Some(committed) {
            std::fs::rename(&next, path.join(name))
                .with_context(|| format!("renaming {} to {name}", next.display()))?;
        } else {
            std::fs::remove_file(&next)
                .with_context(|| format!("removing the uncommitted {}", next.display()))?;
        }
    }
    Ok(())
}
