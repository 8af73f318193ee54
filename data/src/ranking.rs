//! Ranking over the ImageNet-1k label space: class masks (the 200-class logit masks of
//! ImageNet-A / ImageNet-R, imagenet-testbed's ObjectNet sublist) and the top-k rule that
//! training's validation and every evaluation share.
//!
//! Ranking rule: higher logit first, ties broken by the lower class index, so the top-1
//! class is the first maximum (`torch.argmax` on CPU). NaN ranks above every number, as
//! `torch.max` propagates NaN.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why a class mask could not be built.
#[derive(Debug, Error)]
pub enum ClassMaskError {
    #[error("class mask index {index} is out of range for {classes} classes{}", origin_suffix(.origin))]
    Index {
        index: usize,
        classes: usize,
        origin: Option<PathBuf>,
    },
    #[error("class mask selects no class{}; a mask needs at least one class", origin_suffix(.origin))]
    Empty { origin: Option<PathBuf> },
    #[error("cannot read class list {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{}:{line}: expected `<index_in_subset>\\t<imagenet1k_index>\\t<wnid>`, got {text:?}; \
         use the class lists of the reference data folder",
        .path.display()
    )]
    Parse {
        path: PathBuf,
        line: usize,
        text: String,
    },
}

fn origin_suffix(origin: &Option<PathBuf>) -> String {
    match origin {
        Some(p) => format!(" (from {})", p.display()),
        None => String::new(),
    }
}

/// A subset of the classifier's classes that predictions are restricted to.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassMask {
    allowed: Vec<bool>,
}

impl ClassMask {
    /// Mask allowing exactly `indices` out of `num_classes`.
    pub fn from_indices(num_classes: usize, indices: &[usize]) -> Result<Self, ClassMaskError> {
        Self::build(num_classes, indices, None)
    }

    /// Reads a class list in the format of the reference data files
    /// (`imagenet_a_classes.txt`, `imagenet_r_classes.txt`): `#` comments, then one
    /// `<index_in_subset>\t<imagenet1k_index>\t<wnid>` line per class.
    pub fn from_class_list(path: &Path, num_classes: usize) -> Result<Self, ClassMaskError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClassMaskError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut indices = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let idx = trimmed
                .split('\t')
                .nth(1)
                .and_then(|f| f.trim().parse::<usize>().ok())
                .ok_or_else(|| ClassMaskError::Parse {
                    path: path.to_owned(),
                    line: i + 1,
                    text: line.to_owned(),
                })?;
            indices.push(idx);
        }
        Self::build(num_classes, &indices, Some(path.to_owned()))
    }

    fn build(
        num_classes: usize,
        indices: &[usize],
        origin: Option<PathBuf>,
    ) -> Result<Self, ClassMaskError> {
        let mut allowed = vec![false; num_classes];
        for &index in indices {
            if index >= num_classes {
                return Err(ClassMaskError::Index {
                    index,
                    classes: num_classes,
                    origin,
                });
            }
            allowed[index] = true;
        }
        if indices.is_empty() {
            return Err(ClassMaskError::Empty { origin });
        }
        Ok(Self { allowed })
    }

    /// Number of classes of the classifier the mask applies to.
    pub fn num_classes(&self) -> usize {
        self.allowed.len()
    }

    /// Number of allowed classes.
    pub fn len(&self) -> usize {
        self.allowed.iter().filter(|&&a| a).count()
    }

    /// Never true: construction rejects empty masks.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `class` may be predicted.
    pub fn allows(&self, class: usize) -> bool {
        self.allowed.get(class).copied().unwrap_or(false)
    }
}

/// `a` ranks before `b`: larger logit first, NaN first of all, then lower index.
fn ranks_before(logits: &[f32], a: usize, b: usize) -> bool {
    let (x, y) = (logits[a], logits[b]);
    let ord = match (x.is_nan(), y.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
    };
    match ord {
        Ordering::Greater => true,
        Ordering::Less => false,
        Ordering::Equal => a < b,
    }
}

/// The `k` best-ranked classes (allowed by `mask`, if any), best first.
pub fn top_k(logits: &[f32], k: usize, mask: Option<&ClassMask>) -> Vec<usize> {
    let mut best: Vec<usize> = Vec::with_capacity(k + 1);
    for c in 0..logits.len() {
        if mask.is_some_and(|m| !m.allows(c)) {
            continue;
        }
        let pos = best
            .iter()
            .position(|&b| ranks_before(logits, c, b))
            .unwrap_or(best.len());
        if pos < k {
            best.insert(pos, c);
            best.truncate(k);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    // Ten classes; ranking by value: 7 (9.0), 2 (5.0), 4 (5.0), 0 (3.0), 9 (2.5), 1 (2.0), ...
    const LOGITS: [f32; 10] = [3.0, 2.0, 5.0, -1.0, 5.0, 0.0, 1.0, 9.0, -2.0, 2.5];

    #[test]
    fn ranking_breaks_ties_by_lower_index() {
        assert_eq!(top_k(&LOGITS, 5, None), vec![7, 2, 4, 0, 9]);
        assert_eq!(top_k(&[1.0, 1.0, 1.0], 1, None), vec![0]);
        assert_eq!(top_k(&[0.0, 4.0, 4.0], 2, None), vec![1, 2]);
    }

    #[test]
    fn nan_ranks_first() {
        assert_eq!(top_k(&[1.0, f32::NAN, 3.0], 2, None), vec![1, 2]);
    }

    #[test]
    fn mask_with_fewer_than_five_classes() {
        let mask = ClassMask::from_indices(10, &[3, 8]).unwrap();
        assert_eq!(top_k(&LOGITS, 5, Some(&mask)), vec![3, 8]);
    }

    #[test]
    fn class_list_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subset.txt");
        std::fs::write(&path, "# comment\n0\t6\tn01498041\n1\t11\tn01531178\n\n").unwrap();
        let mask = ClassMask::from_class_list(&path, 1000).unwrap();
        assert_eq!(mask.len(), 2);
        assert!(mask.allows(6) && mask.allows(11) && !mask.allows(0));

        std::fs::write(&path, "0\tsix\tn01498041\n").unwrap();
        let err = ClassMask::from_class_list(&path, 1000).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("subset.txt:1"), "{msg}");

        std::fs::write(&path, "0\t1000\tn01498041\n").unwrap();
        let msg = ClassMask::from_class_list(&path, 1000)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("1000") && msg.contains("subset.txt"), "{msg}");
    }
}
