//! Dataset health reports. Every reader fills one: bad files are skipped and counted, never
//! silently.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::preprocess::decode_rgb;

/// Extensions accepted as images (compared case-insensitively). Anything else in a class folder
/// or at the dataset root is a non-image file: ignored and counted.
pub const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "jpe"];

pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
        .unwrap_or(false)
}

/// What a walk over a dataset found.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CheckReport {
    /// Dataset name, e.g. `ImageNet-A`.
    pub dataset: String,
    pub root: PathBuf,
    /// Usable images per class folder (folder name -> count).
    pub images_per_class: BTreeMap<String, usize>,
    /// Files that are not images (README, CSV, ...), at the root or inside class folders.
    pub non_image_files: Vec<PathBuf>,
    /// Images that do not decode (truncated, empty, corrupt), with the reason.
    pub unreadable_images: Vec<(PathBuf, String)>,
    /// ImageNet-S images without a mask.
    pub missing_masks: Vec<PathBuf>,
    /// ImageNet-S masks whose image is missing.
    pub missing_images: Vec<PathBuf>,
    /// ImageNet-S masks with zero or several class ids (or unreadable), with the reason.
    pub bad_masks: Vec<(PathBuf, String)>,
    /// Folders whose name is not a class of this dataset.
    pub unknown_class_folders: Vec<PathBuf>,
    /// Known folders deliberately left out (ObjectNet classes outside ImageNet, the ImageNet-S
    /// merged wnids), with their file counts.
    pub excluded_class_folders: BTreeMap<String, usize>,
    /// Folders reached a second time through a symbolic link (a loop, or two names for one
    /// folder): skipped, so that no image is counted twice.
    pub linked_folders: Vec<PathBuf>,
    /// Whether every image was decoded (false: only listed).
    pub decoded: bool,
}

/// The real folders a walk has entered, by canonical path: a folder reached again through a
/// link is not walked twice, and a link loop ends at its first repeat.
#[derive(Debug, Default)]
pub struct SeenDirs(std::collections::HashSet<PathBuf>);

impl SeenDirs {
    /// True the first time the real folder behind `dir` is seen. A folder that cannot be
    /// resolved counts as new (reading it will report the problem).
    pub fn first_visit(&mut self, dir: &Path) -> bool {
        match std::fs::canonicalize(dir) {
            Ok(real) => self.0.insert(real),
            Err(_) => true,
        }
    }
}

impl CheckReport {
    pub fn new(dataset: &str, root: &Path) -> Self {
        Self {
            dataset: dataset.to_string(),
            root: root.to_path_buf(),
            ..Default::default()
        }
    }

    pub fn num_images(&self) -> usize {
        self.images_per_class.values().sum()
    }

    pub fn num_classes(&self) -> usize {
        self.images_per_class.len()
    }

    /// Number of problems that made a file unusable or out of place.
    pub fn num_problems(&self) -> usize {
        self.non_image_files.len()
            + self.unreadable_images.len()
            + self.missing_masks.len()
            + self.missing_images.len()
            + self.bad_masks.len()
            + self.unknown_class_folders.len()
            + self.linked_folders.len()
    }

    pub fn is_clean(&self) -> bool {
        self.num_problems() == 0
    }

    /// Decode every listed image in parallel; failures move from the class counts to
    /// `unreadable_images`. `paths` pairs each image with its class folder name.
    pub fn decode_all(
        &mut self,
        paths: &[(PathBuf, String)],
        progress: Option<&(dyn Fn(usize) + Sync)>,
    ) {
        let done = std::sync::atomic::AtomicUsize::new(0);
        let failures: Vec<(usize, String)> = paths
            .par_iter()
            .enumerate()
            .filter_map(|(i, (p, _))| {
                // A decoder panic is a bad file like any other, not the end of the check.
                let r = match std::panic::catch_unwind(|| decode_rgb(p)) {
                    Ok(r) => r.err().map(|e| (i, e.to_string())),
                    Err(panic) => Some((
                        i,
                        format!(
                            "the decoder panicked: {}",
                            crate::error::panic_message(panic.as_ref())
                        ),
                    )),
                };
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if let Some(cb) = progress {
                    cb(n);
                }
                r
            })
            .collect();
        for (i, reason) in failures {
            let (p, class) = &paths[i];
            if let Some(c) = self.images_per_class.get_mut(class) {
                *c = c.saturating_sub(1);
            }
            self.unreadable_images.push((p.clone(), reason));
        }
        self.unreadable_images.sort();
        self.decoded = true;
    }
}

fn list<T: fmt::Display>(f: &mut fmt::Formatter<'_>, title: &str, items: &[T]) -> fmt::Result {
    if items.is_empty() {
        return Ok(());
    }
    writeln!(f, "  {title}: {}", items.len())?;
    for it in items.iter().take(20) {
        writeln!(f, "    {it}")?;
    }
    if items.len() > 20 {
        writeln!(f, "    ... and {} more", items.len() - 20)?;
    }
    Ok(())
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} at {}: {} images in {} classes{}",
            self.dataset,
            self.root.display(),
            self.num_images(),
            self.num_classes(),
            if self.decoded {
                " (all decoded)"
            } else {
                " (listed, not decoded)"
            }
        )?;
        if let (Some(min), Some(max)) = (
            self.images_per_class.values().min(),
            self.images_per_class.values().max(),
        ) {
            writeln!(f, "  images per class: min {min}, max {max}")?;
        }
        let paths = |v: &[PathBuf]| {
            v.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
        };
        let reasons = |v: &[(PathBuf, String)]| {
            v.iter()
                .map(|(p, r)| format!("{}: {r}", p.display()))
                .collect::<Vec<_>>()
        };
        list(
            f,
            "non-image files (ignored)",
            &paths(&self.non_image_files),
        )?;
        list(
            f,
            "unreadable images (skipped)",
            &reasons(&self.unreadable_images),
        )?;
        list(
            f,
            "images without a mask (skipped)",
            &paths(&self.missing_masks),
        )?;
        list(
            f,
            "masks without an image (skipped)",
            &paths(&self.missing_images),
        )?;
        list(f, "bad masks (skipped)", &reasons(&self.bad_masks))?;
        list(
            f,
            "unknown class folders (ignored)",
            &paths(&self.unknown_class_folders),
        )?;
        list(
            f,
            "folders reached again through a link (skipped)",
            &paths(&self.linked_folders),
        )?;
        if !self.excluded_class_folders.is_empty() {
            let n: usize = self.excluded_class_folders.values().sum();
            writeln!(
                f,
                "  excluded class folders: {} ({} files)",
                self.excluded_class_folders.len(),
                n
            )?;
        }
        if self.is_clean() {
            writeln!(f, "  no problems found")?;
        }
        Ok(())
    }
}
