//! Label tables, embedded so that a build never depends on files next to the repository.
//!
//! Every ImageNet index is the position of the wnid in the sorted list of the 1000 ILSVRC-2012
//! wnids (the torchvision/timm convention, identical to RobustViT's `imagenet_classes.json`).

use std::collections::HashMap;
use std::sync::OnceLock;

const WNIDS_TXT: &str = include_str!("../assets/imagenet_wnids_1000.txt");
const CLASS_NAMES_JSON: &str = include_str!("../assets/imagenet_class_names.json");
const IMAGENET_A_TXT: &str = include_str!("../assets/imagenet_a_classes.txt");
const IMAGENET_R_TXT: &str = include_str!("../assets/imagenet_r_classes.txt");
const OBJECTNET_TSV: &str = include_str!("../assets/objectnet_to_imagenet.tsv");
const SI_SCORE_TSV: &str = include_str!("../assets/si_score_label_to_imagenet.tsv");
const IMAGENET_S_TSV: &str = include_str!("../assets/imagenet_s919_categories.tsv");

/// Number of ImageNet-1k classes.
pub const NUM_CLASSES: usize = 1000;

/// The wnids RobustViT drops from ImageNet-S919 (`MERGED_TAGS`): the five merged-away wnids and
/// the five merge targets. Only the targets exist as folders; they hold images of the merged-away
/// wnid, whose ImageNet train JPEG is not under the folder's wnid, hence they are skipped.
pub const IMAGENET_S_MERGED_WNIDS: [&str; 10] = [
    "n04356056",
    "n04355933",
    "n04493381",
    "n02808440",
    "n03642806",
    "n03832673",
    "n04008634",
    "n03773504",
    "n03887697",
    "n15075141",
];

fn data_lines(text: &'static str) -> impl Iterator<Item = Vec<&'static str>> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split('\t').collect())
}

fn parse_index(s: &str) -> usize {
    s.trim()
        .parse()
        .unwrap_or_else(|_| panic!("embedded label table: bad index {s:?}"))
}

/// The 1000 ImageNet wnids, index = ImageNet class index.
pub fn imagenet_wnids() -> &'static [&'static str] {
    static CELL: OnceLock<Vec<&'static str>> = OnceLock::new();
    CELL.get_or_init(|| {
        let v: Vec<&'static str> = data_lines(WNIDS_TXT)
            .enumerate()
            .map(|(i, f)| {
                assert_eq!(parse_index(f[0]), i, "wnid table out of order");
                f[1]
            })
            .collect();
        assert_eq!(v.len(), NUM_CLASSES);
        v
    })
}

/// ImageNet class index of a wnid (`n01440764` -> 0).
pub fn wnid_to_index(wnid: &str) -> Option<usize> {
    static CELL: OnceLock<HashMap<&'static str, usize>> = OnceLock::new();
    CELL.get_or_init(|| {
        imagenet_wnids()
            .iter()
            .enumerate()
            .map(|(i, w)| (*w, i))
            .collect()
    })
    .get(wnid)
    .copied()
}

/// Human-readable ImageNet class names (RobustViT `CLS2IDX.py`), index = class index.
pub fn imagenet_class_names() -> &'static [String] {
    static CELL: OnceLock<Vec<String>> = OnceLock::new();
    CELL.get_or_init(|| {
        let map: HashMap<String, String> =
            serde_json::from_str(CLASS_NAMES_JSON).expect("embedded class-name table");
        (0..NUM_CLASSES)
            .map(|i| map[&i.to_string()].clone())
            .collect()
    })
}

/// An ImageNet class index as its first name (`tench`, not `tench, Tinca tinca`), or the
/// number when it is outside ImageNet's 1000: the title of a picture.
pub fn imagenet_short_name(class: u32) -> String {
    imagenet_class_names()
        .get(class as usize)
        .map(|n| n.split(',').next().unwrap_or(n).trim().to_owned())
        .unwrap_or_else(|| format!("class {class}"))
}

/// One class of a 200-class benchmark (ImageNet-A or ImageNet-R).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubsetClass {
    /// Label in the benchmark's own 200-way space.
    pub index_200: usize,
    /// ImageNet-1k class index.
    pub imagenet_index: usize,
    pub wnid: &'static str,
}

fn parse_subset(text: &'static str) -> Vec<SubsetClass> {
    let v: Vec<SubsetClass> = data_lines(text)
        .enumerate()
        .map(|(i, f)| {
            let c = SubsetClass {
                index_200: parse_index(f[0]),
                imagenet_index: parse_index(f[1]),
                wnid: f[2].trim(),
            };
            assert_eq!(c.index_200, i, "200-class table out of order");
            assert_eq!(wnid_to_index(c.wnid), Some(c.imagenet_index));
            c
        })
        .collect();
    assert_eq!(v.len(), 200);
    v
}

/// The 200 ImageNet-A classes in 200-way label order (hendrycks `thousand_k_to_200`).
pub fn imagenet_a_classes() -> &'static [SubsetClass] {
    static CELL: OnceLock<Vec<SubsetClass>> = OnceLock::new();
    CELL.get_or_init(|| parse_subset(IMAGENET_A_TXT))
}

/// The 200 ImageNet-R classes in 200-way label order (hendrycks `imagenet_r_wnids`).
pub fn imagenet_r_classes() -> &'static [SubsetClass] {
    static CELL: OnceLock<Vec<SubsetClass>> = OnceLock::new();
    CELL.get_or_init(|| parse_subset(IMAGENET_R_TXT))
}

/// One ObjectNet class that overlaps ImageNet-1k.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectNetClass {
    /// Folder under `objectnet-1.0/images/`.
    pub folder: &'static str,
    /// ObjectNet label (`folder_to_objectnet_label.json`).
    pub label: &'static str,
    /// ImageNet indices in mapping-file order. RobustViT scores only the first; the ObjectNet
    /// protocol accepts any of them.
    pub imagenet_indices: Vec<usize>,
}

/// The 113 ObjectNet classes that map to ImageNet-1k (125 ImageNet classes in all).
pub fn objectnet_classes() -> &'static [ObjectNetClass] {
    static CELL: OnceLock<Vec<ObjectNetClass>> = OnceLock::new();
    CELL.get_or_init(|| {
        let v: Vec<ObjectNetClass> = data_lines(OBJECTNET_TSV)
            .map(|f| ObjectNetClass {
                folder: f[0].trim(),
                label: f[1].trim(),
                imagenet_indices: f[2].split(',').map(parse_index).collect(),
            })
            .collect();
        assert_eq!(v.len(), 113);
        v
    })
}

/// imagenet-testbed's ObjectNet `class_sublist`: every ImageNet index that some ObjectNet class
/// maps to, sorted (125 indices; no index is shared by two ObjectNet classes).
pub fn objectnet_class_sublist() -> &'static [usize] {
    static CELL: OnceLock<Vec<usize>> = OnceLock::new();
    CELL.get_or_init(|| {
        let mut v: Vec<usize> = objectnet_classes()
            .iter()
            .flat_map(|c| c.imagenet_indices.iter().copied())
            .collect();
        v.sort_unstable();
        v
    })
}

/// One SI-Score class folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiScoreClass {
    /// Folder name (may contain spaces, e.g. `balance beam`).
    pub folder: &'static str,
    pub imagenet_index: usize,
}

/// SI-Score folder name -> ImageNet index (`label_str_to_imagenet_classes`, 112 names).
pub fn si_score_classes() -> &'static [SiScoreClass] {
    static CELL: OnceLock<Vec<SiScoreClass>> = OnceLock::new();
    CELL.get_or_init(|| {
        let v: Vec<SiScoreClass> = data_lines(SI_SCORE_TSV)
            .map(|f| SiScoreClass {
                folder: f[0].trim(),
                imagenet_index: parse_index(f[1]),
            })
            .collect();
        assert_eq!(v.len(), 112);
        v
    })
}

/// One ImageNet-S919 category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageNetSCategory {
    pub wnid: &'static str,
    pub imagenet_index: usize,
    /// The id this class carries in ImageNet-S masks (`R + 256*G`): its 1-based position in
    /// `ImageNetS_categories_im919.txt`.
    pub mask_id: u16,
    /// False for the five merge targets RobustViT skips.
    pub usable: bool,
}

/// The 919 ImageNet-S categories in the order of the official category file.
pub fn imagenet_s_categories() -> &'static [ImageNetSCategory] {
    static CELL: OnceLock<Vec<ImageNetSCategory>> = OnceLock::new();
    CELL.get_or_init(|| {
        let v: Vec<ImageNetSCategory> = data_lines(IMAGENET_S_TSV)
            .enumerate()
            .map(|(i, f)| ImageNetSCategory {
                wnid: f[0].trim(),
                imagenet_index: parse_index(f[1]),
                mask_id: (i + 1) as u16,
                usable: f[2].trim() == "1",
            })
            .collect();
        assert_eq!(v.len(), 919);
        v
    })
}

/// Look up an ImageNet-S category by wnid.
pub fn imagenet_s_category(wnid: &str) -> Option<&'static ImageNetSCategory> {
    static CELL: OnceLock<HashMap<&'static str, usize>> = OnceLock::new();
    let map = CELL.get_or_init(|| {
        imagenet_s_categories()
            .iter()
            .enumerate()
            .map(|(i, c)| (c.wnid, i))
            .collect()
    });
    map.get(wnid).map(|&i| &imagenet_s_categories()[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_for_titles() {
        assert_eq!(imagenet_short_name(0), "tench");
        assert_eq!(imagenet_short_name(5000), "class 5000");
    }

    #[test]
    fn tables_parse_with_known_values() {
        assert_eq!(imagenet_wnids()[0], "n01440764");
        assert_eq!(imagenet_wnids()[999], "n15075141");
        assert_eq!(wnid_to_index("n01498041"), Some(6));
        assert_eq!(wnid_to_index("n99999999"), None);
        assert!(imagenet_class_names()[0].starts_with("tench"));
        let a = imagenet_a_classes();
        assert_eq!(
            a[0],
            SubsetClass {
                index_200: 0,
                imagenet_index: 6,
                wnid: "n01498041"
            }
        );
        assert_eq!(imagenet_r_classes()[1].imagenet_index, 2);
        let on = objectnet_classes();
        let alarm = on.iter().find(|c| c.folder == "alarm_clock").unwrap();
        assert_eq!(alarm.imagenet_indices, vec![409, 530]);
        let n_imagenet: usize = on.iter().map(|c| c.imagenet_indices.len()).sum();
        assert_eq!(n_imagenet, 125);
        // The testbed's sublist: 125 distinct indices, sorted.
        let sub = objectnet_class_sublist();
        assert_eq!(sub.len(), 125);
        assert!(sub.windows(2).all(|w| w[0] < w[1]));
        assert!(sub.contains(&409) && sub.contains(&530) && !sub.contains(&0));
        let bb = si_score_classes()
            .iter()
            .find(|c| c.folder == "balance beam")
            .unwrap();
        assert_eq!(bb.imagenet_index, 416);
        let cats = imagenet_s_categories();
        assert_eq!(cats.iter().filter(|c| c.usable).count(), 914);
        assert_eq!(imagenet_s_category("n01440764").unwrap().mask_id, 1);
        for w in IMAGENET_S_MERGED_WNIDS {
            if let Some(c) = imagenet_s_category(w) {
                assert!(!c.usable, "{w}");
            }
        }
    }
}
