//! What `evaluate --check` verifies beyond listing files: that every image decodes, and that the
//! outputs can be written. Output checks also run before a real evaluation, so that a bad
//! `--out` is found before the first image rather than after the first dataset.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

use crate::plan::{Datasets, SegSet};
use crate::results::{self, RobustnessRow, SegmentationRow};

/// The decode pass over one dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub dataset: String,
    /// Image (and mask) files listed.
    pub found: usize,
    /// Files that did not decode, with the reason.
    pub bad: Vec<(PathBuf, String)>,
}

impl Decoded {
    pub fn decoded(&self) -> usize {
        self.found - self.bad.len()
    }
}

/// Decodes every listed image (and segmentation mask) in parallel. The `.mat` ground truth is
/// left out: its reader checks it when it is opened.
pub fn decode_datasets(ds: &Datasets) -> Vec<Decoded> {
    let run = |name: &str, root: &Path, paths: Vec<(PathBuf, String)>| {
        let mut r = data::CheckReport::new(name, root);
        r.decode_all(&paths, None);
        Decoded {
            dataset: name.to_string(),
            found: paths.len(),
            bad: r.unreadable_images,
        }
    };
    let mut out = Vec::new();
    for set in &ds.classification {
        let paths = set
            .samples
            .iter()
            .map(|s| (s.path.clone(), s.class.clone()))
            .collect();
        out.push(run(&set.name, &set.root, paths));
    }
    for set in &ds.segmentation {
        if let SegSet::Folder { name, pairs, .. } = set {
            let paths = pairs
                .iter()
                .flat_map(|p| [p.image.clone(), p.mask.clone()])
                .map(|p| (p, String::new()))
                .collect();
            out.push(run(name, Path::new(&set.location()), paths));
        }
    }
    out
}

/// `--out` must be a folder (or creatable), and the tables already in it must be readable: a
/// merge into an unreadable table would fail only after a whole dataset was evaluated.
pub fn check_outputs(out: &Path) -> Result<()> {
    if out.exists() && !out.is_dir() {
        bail!(
            "--out {} is not a folder: give a folder for the result tables",
            out.display()
        );
    }
    let rob = out.join("robustness.csv");
    results::read_rows::<RobustnessRow>(&rob).with_context(|| {
        format!(
            "--out {}: the existing {} cannot be merged into; fix, move or delete it",
            out.display(),
            rob.display()
        )
    })?;
    let seg = out.join("segmentation.csv");
    results::read_rows::<SegmentationRow>(&seg).with_context(|| {
        format!(
            "--out {}: the existing {} cannot be merged into; fix, move or delete it",
            out.display(),
            seg.display()
        )
    })?;
    Ok(())
}

/// [`check_outputs`], then creates `--out` and proves a file can be written there.
pub fn prepare_outputs(out: &Path) -> Result<()> {
    check_outputs(out)?;
    std::fs::create_dir_all(out)
        .with_context(|| format!("--out {} cannot be created", out.display()))?;
    tempfile::Builder::new()
        .prefix(".write-test-")
        .tempfile_in(out)
        .with_context(|| format!("--out {} is not writable", out.display()))?;
    Ok(())
}
