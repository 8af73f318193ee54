//! Readers for the seven robustness benchmarks, each in the layout it is downloaded in.
//!
//! A reader lists `<root>/<class folder>/<image>` in sorted order (so every machine sees the same
//! order), maps each folder to its ImageNet-1k target(s), and records everything it skipped in a
//! [`CheckReport`]. Files are listed, not decoded; [`EvalDataset::check`] decodes them all.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::check::{has_image_extension, CheckReport};
use crate::error::{DataError, Result};
use crate::labels;

/// The evaluation sets of the paper (SI-Score counts as three).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Benchmark {
    ImageNetVal,
    /// ImageNet-v2; which variant is decided by the folder given (matched-frequency by default).
    ImageNetV2,
    ImageNetA,
    ImageNetR,
    Sketch,
    ObjectNet,
    SiScoreLocation,
    SiScoreRotation,
    SiScoreSize,
}

/// Which evaluation protocol the targets and label space follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// What RobustViT's code did: argmax over all 1000 classes, 0.5/0.5 normalisation, ObjectNet
    /// scored against the first mapped class only, no border crop.
    Paper,
    /// Each benchmark's own protocol and each model's own preprocessing: 200-class logit masks
    /// for A and R; ObjectNet as its own evaluation code scores it (all 1000 logits ranked, a
    /// hit is any ImageNet class mapped to the image's ObjectNet class, top-1 and top-5, no
    /// border crop).
    Official,
    /// imagenet-testbed (Taori et al. 2020, `src/eval_settings/objectnet.py`), which most
    /// robustness papers quote for ObjectNet: a 2-pixel border cut from every side of the image
    /// before the model's preprocessing, logits restricted to the 125 mapped ImageNet classes
    /// (`class_sublist`), argmax among them, any mapped class accepted. The testbed reports
    /// top-1 only; top-5 here ranks within the same 125 classes. Other benchmarks as `Official`.
    Testbed,
}

impl Protocol {
    /// Every protocol, in the order the tables list them.
    pub const ALL: [Protocol; 3] = [Protocol::Paper, Protocol::Official, Protocol::Testbed];

    /// Name used in result tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Paper => "paper",
            Protocol::Official => "official",
            Protocol::Testbed => "testbed",
        }
    }

    /// Whether `benchmark` is scored differently under this protocol than under `Official`
    /// (only ObjectNet is, under `Testbed`).
    pub fn differs_from_official(self, benchmark: Benchmark) -> bool {
        match self {
            Protocol::Paper => true,
            Protocol::Official => false,
            Protocol::Testbed => benchmark == Benchmark::ObjectNet,
        }
    }
}

impl Benchmark {
    pub const ALL: [Benchmark; 9] = [
        Benchmark::ImageNetVal,
        Benchmark::ImageNetV2,
        Benchmark::ImageNetA,
        Benchmark::ImageNetR,
        Benchmark::Sketch,
        Benchmark::ObjectNet,
        Benchmark::SiScoreLocation,
        Benchmark::SiScoreRotation,
        Benchmark::SiScoreSize,
    ];

    /// Short machine name (`imagenet-a`, `si-score-location`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Benchmark::ImageNetVal => "imagenet-val",
            Benchmark::ImageNetV2 => "imagenet-v2",
            Benchmark::ImageNetA => "imagenet-a",
            Benchmark::ImageNetR => "imagenet-r",
            Benchmark::Sketch => "imagenet-sketch",
            Benchmark::ObjectNet => "objectnet",
            Benchmark::SiScoreLocation => "si-score-location",
            Benchmark::SiScoreRotation => "si-score-rotation",
            Benchmark::SiScoreSize => "si-score-size",
        }
    }

    pub fn display_name(self) -> &'static str {
        match self {
            Benchmark::ImageNetVal => "ImageNet val",
            Benchmark::ImageNetV2 => "ImageNet-v2",
            Benchmark::ImageNetA => "ImageNet-A",
            Benchmark::ImageNetR => "ImageNet-R",
            Benchmark::Sketch => "ImageNet-Sketch",
            Benchmark::ObjectNet => "ObjectNet",
            Benchmark::SiScoreLocation => "SI-Score location",
            Benchmark::SiScoreRotation => "SI-Score rotation",
            Benchmark::SiScoreSize => "SI-Score size",
        }
    }

    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|b| b.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|b| b.name()).collect();
                DataError::Invalid(format!(
                    "unknown benchmark {name:?}; known: {}",
                    names.join(", ")
                ))
            })
    }

    /// Conventional folder under a data root (see data/README.md).
    pub fn default_dir(self) -> &'static str {
        match self {
            Benchmark::ImageNetVal => "imagenet/val",
            Benchmark::ImageNetV2 => "imagenetv2-matched-frequency-format-val",
            Benchmark::ImageNetA => "imagenet-a",
            Benchmark::ImageNetR => "imagenet-r",
            Benchmark::Sketch => "sketch",
            Benchmark::ObjectNet => "objectnet-1.0",
            Benchmark::SiScoreLocation => "si-score/object_location",
            Benchmark::SiScoreRotation => "si-score/object_rotation",
            Benchmark::SiScoreSize => "si-score/object_size",
        }
    }

    /// Number of class folders of a complete download (None where it varies).
    pub fn expected_classes(self) -> Option<usize> {
        match self {
            Benchmark::ImageNetVal | Benchmark::ImageNetV2 | Benchmark::Sketch => Some(1000),
            Benchmark::ImageNetA | Benchmark::ImageNetR => Some(200),
            Benchmark::ObjectNet => Some(113),
            _ => None,
        }
    }

    fn expected_layout(self) -> &'static str {
        match self {
            Benchmark::ImageNetVal => {
                "1000 wnid folders like n01440764/ holding *.JPEG (the ILSVRC2012 val set sorted into class folders, e.g. with valprep.sh)"
            }
            Benchmark::ImageNetV2 => {
                "1000 folders named 0..999 (class indices) as unpacked from imagenetv2-matched-frequency.tar.gz"
            }
            Benchmark::ImageNetA => "200 wnid folders like n01498041/ (unpack imagenet-a.tar)",
            Benchmark::ImageNetR => "200 wnid folders like n01443537/ (unpack imagenet-r.tar)",
            Benchmark::Sketch => "1000 wnid folders like n01440764/ (unpack ImageNet-Sketch.zip; the folder is called sketch/)",
            Benchmark::ObjectNet => {
                "objectnet-1.0/ with images/<class folder>/*.png (e.g. images/alarm_clock/) and mappings/ (unzip objectnet-1.0.zip)"
            }
            _ => "class-name folders like ambulance/ holding *.jpg (one SI-Score subset as downloaded from the si-score-dataset bucket)",
        }
    }

    /// The classes whose logits are ranked, when not all of them: the 200-class masks of A and
    /// R (official and testbed; in 200-way order) and ObjectNet's 125-class sublist (testbed).
    pub fn label_mask(self, protocol: Protocol) -> Option<Vec<u32>> {
        let table = match (self, protocol) {
            (_, Protocol::Paper) => return None,
            (Benchmark::ImageNetA, _) => labels::imagenet_a_classes(),
            (Benchmark::ImageNetR, _) => labels::imagenet_r_classes(),
            (Benchmark::ObjectNet, Protocol::Testbed) => {
                return Some(
                    labels::objectnet_class_sublist()
                        .iter()
                        .map(|&i| i as u32)
                        .collect(),
                )
            }
            _ => return None,
        };
        Some(table.iter().map(|c| c.imagenet_index as u32).collect())
    }

    /// Pixels to cut from every side of the decoded image before the resize: ObjectNet's red
    /// frame, which only imagenet-testbed removes (ObjectNet's own code and RobustViT do not).
    pub fn border(self, protocol: Protocol) -> u32 {
        match (self, protocol) {
            (Benchmark::ObjectNet, Protocol::Testbed) => 2,
            _ => 0,
        }
    }
}

/// How a class folder relates to the benchmark's label space.
enum ClassMatch {
    Known(Vec<u32>),
    Excluded,
    Unknown,
}

/// One evaluation image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EvalSample {
    pub path: PathBuf,
    /// Class folder name.
    pub class: String,
    /// Accepted ImageNet-1k indices; the first one is the paper's target.
    pub targets: Vec<u32>,
}

impl EvalSample {
    /// Indices counted as correct under `protocol`.
    pub fn targets(&self, protocol: Protocol) -> &[u32] {
        match protocol {
            Protocol::Paper => &self.targets[..1],
            Protocol::Official | Protocol::Testbed => &self.targets,
        }
    }

    /// The single target the paper scored against.
    pub fn paper_target(&self) -> u32 {
        self.targets[0]
    }
}

/// A benchmark read from disk.
#[derive(Debug, Clone)]
pub struct EvalDataset {
    pub benchmark: Benchmark,
    /// The folder holding the class folders.
    pub root: PathBuf,
    /// Images in sorted (class folder, file name) order.
    pub samples: Vec<EvalSample>,
    pub report: CheckReport,
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|err| DataError::io(dir, err)))
        .collect::<Result<_>>()?;
    v.sort();
    Ok(v)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// ObjectNet folder names known to `mappings/folder_to_objectnet_label.json`, when present.
fn objectnet_known_folders(mappings: &Path) -> Result<Option<HashSet<String>>> {
    let p = mappings.join("folder_to_objectnet_label.json");
    if !p.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p).map_err(|e| DataError::io(&p, e))?;
    let map: HashMap<String, String> =
        serde_json::from_str(&text).map_err(|e| DataError::Layout {
            dataset: "ObjectNet".into(),
            root: p.clone(),
            problem: format!("not a JSON object of folder -> label ({e})"),
            expected: "the mappings/ folder of objectnet-1.0.zip".into(),
        })?;
    for c in labels::objectnet_classes() {
        if let Some(label) = map.get(c.folder) {
            if label != c.label {
                return Err(DataError::Layout {
                    dataset: "ObjectNet".into(),
                    root: p.clone(),
                    problem: format!(
                        "folder {} is labelled {label:?}, the embedded mapping says {:?}",
                        c.folder, c.label
                    ),
                    expected: "the mappings/ of ObjectNet 1.0".into(),
                });
            }
        }
    }
    Ok(Some(map.into_keys().collect()))
}

impl EvalDataset {
    /// Read `benchmark` from `root` (its folder as downloaded; see [`Benchmark::default_dir`]).
    pub fn open(benchmark: Benchmark, root: &Path) -> Result<Self> {
        let layout_err = |problem: String| DataError::Layout {
            dataset: benchmark.display_name().into(),
            root: root.to_path_buf(),
            problem,
            expected: benchmark.expected_layout().into(),
        };
        if !root.is_dir() {
            return Err(layout_err("does not exist or is not a folder".into()));
        }
        // ObjectNet: accept objectnet-1.0/ or objectnet-1.0/images/.
        let mut objectnet_known = None;
        let class_root = if benchmark == Benchmark::ObjectNet {
            let (images, mappings) = if root.join("images").is_dir() {
                (root.join("images"), root.join("mappings"))
            } else {
                (root.to_path_buf(), root.join("../mappings"))
            };
            objectnet_known = objectnet_known_folders(&mappings)?;
            images
        } else {
            root.to_path_buf()
        };

        let a: HashMap<&str, usize> = labels::imagenet_a_classes()
            .iter()
            .map(|c| (c.wnid, c.imagenet_index))
            .collect();
        let r: HashMap<&str, usize> = labels::imagenet_r_classes()
            .iter()
            .map(|c| (c.wnid, c.imagenet_index))
            .collect();
        let on: HashMap<&str, &Vec<usize>> = labels::objectnet_classes()
            .iter()
            .map(|c| (c.folder, &c.imagenet_indices))
            .collect();
        let si: HashMap<&str, usize> = labels::si_score_classes()
            .iter()
            .map(|c| (c.folder, c.imagenet_index))
            .collect();
        let classify = |name: &str| -> ClassMatch {
            let one = |i: Option<usize>| match i {
                Some(i) => ClassMatch::Known(vec![i as u32]),
                None => ClassMatch::Unknown,
            };
            match benchmark {
                Benchmark::ImageNetVal | Benchmark::Sketch => one(labels::wnid_to_index(name)),
                Benchmark::ImageNetV2 => match name.parse::<usize>() {
                    Ok(i) if i < labels::NUM_CLASSES && i.to_string() == name => one(Some(i)),
                    _ => ClassMatch::Unknown,
                },
                Benchmark::ImageNetA => one(a.get(name).copied()),
                Benchmark::ImageNetR => one(r.get(name).copied()),
                Benchmark::ObjectNet => match on.get(name) {
                    Some(v) => ClassMatch::Known(v.iter().map(|&i| i as u32).collect()),
                    None => match &objectnet_known {
                        Some(known) if !known.contains(name) => ClassMatch::Unknown,
                        _ => ClassMatch::Excluded,
                    },
                },
                _ => one(si.get(name).copied()),
            }
        };

        let mut report = CheckReport::new(benchmark.display_name(), root);
        let mut samples = Vec::new();
        for entry in sorted_entries(&class_root)? {
            if !entry.is_dir() {
                // README/CSV files at dataset roots (they crash the official loader).
                report.non_image_files.push(entry);
                continue;
            }
            let name = file_name(&entry);
            let files = sorted_entries(&entry)?;
            match classify(&name) {
                ClassMatch::Unknown => report.unknown_class_folders.push(entry),
                ClassMatch::Excluded => {
                    report.excluded_class_folders.insert(name, files.len());
                }
                ClassMatch::Known(targets) => {
                    let mut n = 0;
                    for f in files {
                        if f.is_file() && has_image_extension(&f) {
                            samples.push(EvalSample {
                                path: f,
                                class: name.clone(),
                                targets: targets.clone(),
                            });
                            n += 1;
                        } else {
                            report.non_image_files.push(f);
                        }
                    }
                    report.images_per_class.insert(name, n);
                }
            }
        }
        if report.images_per_class.is_empty() {
            let problem = if report.unknown_class_folders.is_empty() {
                "has no class folders".to_string()
            } else {
                format!(
                    "has no known class folders ({} unknown, e.g. {})",
                    report.unknown_class_folders.len(),
                    report.unknown_class_folders[0].display()
                )
            };
            return Err(layout_err(problem));
        }
        Ok(Self {
            benchmark,
            root: class_root,
            samples,
            report,
        })
    }

    /// Open `benchmark` at its conventional folder under `data_root`.
    pub fn open_in(benchmark: Benchmark, data_root: &Path) -> Result<Self> {
        Self::open(benchmark, &data_root.join(benchmark.default_dir()))
    }

    /// Decode every image once; unreadable ones are removed from `samples` and named in the
    /// report. `progress` receives the number of images decoded so far.
    pub fn check(&mut self, progress: Option<&(dyn Fn(usize) + Sync)>) -> &CheckReport {
        let paths: Vec<(PathBuf, String)> = self
            .samples
            .iter()
            .map(|s| (s.path.clone(), s.class.clone()))
            .collect();
        self.report.decode_all(&paths, progress);
        let bad: HashSet<&PathBuf> = self
            .report
            .unreadable_images
            .iter()
            .map(|(p, _)| p)
            .collect();
        self.samples.retain(|s| !bad.contains(&s.path));
        &self.report
    }

    /// Images per accepted target class (the paper target), for per-class reports.
    pub fn class_counts(&self) -> BTreeMap<u32, usize> {
        let mut m = BTreeMap::new();
        for s in &self.samples {
            *m.entry(s.paper_target()).or_insert(0) += 1;
        }
        m
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}
