//! The untrusted-input parsers of `data` (ImageNet-S mask PNGs and their class ids, split
//! files, the ObjectNet folder mapping, ImageNet-Segmentation's `.mat` file) on a fixed budget
//! of deterministically mutated inputs: Ok or a typed error, never a panic. Also replays the
//! crash corpus under `fuzz/regressions/`.

#[path = "../../model/tests/support/mutate.rs"]
mod mutate;

use data::imagenet_s::{decode_mask_bytes, ImageNetSSplit};
use data::segmentation::mat::GtSegs;
use std::path::{Path, PathBuf};

const CASES: usize = 10_000;

fn png(img: &image::RgbImage) -> Vec<u8> {
    let mut v = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut v), image::ImageFormat::Png)
        .unwrap();
    v
}

pub fn decode_mask(bytes: &[u8]) -> bool {
    match decode_mask_bytes(bytes, Path::new("mask.png")) {
        Ok(m) => {
            // Class ids are sorted, distinct, never 0 or the ignore id.
            assert!(m.class_ids.windows(2).all(|w| w[0] < w[1]));
            assert!(!m.class_ids.contains(&0) && !m.class_ids.contains(&1000));
            assert_eq!(
                m.binary.data.len(),
                m.binary.width as usize * m.binary.height as usize
            );
            true
        }
        Err(_) => false,
    }
}

#[test]
fn mask_png_never_panics() {
    let seeds = vec![
        png(&data::synthetic::imagenet_s_mask(12, 10, &[7])),
        png(&data::synthetic::imagenet_s_mask(6, 5, &[1, 300])),
    ];
    assert!(seeds.iter().all(|s| decode_mask(s)));
    mutate::never_panics(
        "mask_png",
        0x3A5C,
        CASES,
        &seeds,
        &mutate::regressions("mask_png"),
        decode_mask,
    );
}

pub fn parse_split(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    ImageNetSSplit::parse(text, Path::new("split.json")).is_ok()
}

#[test]
fn split_file_never_panics() {
    let text = r#"{"format": "robustvit-imagenet-s-split/1",
      "options": {"num_train_classes": 2, "train_per_class": 1, "val_per_class": 1, "seed": 3},
      "train": [{"wnid": "n01440764", "label": 0, "mask": "n01440764/a.png", "image": "n01440764/a.JPEG"},
                {"wnid": "n01443537", "label": 1, "mask": "n01443537/b.png", "image": "n01443537/b.JPEG"}],
      "val": [{"wnid": "n01484850", "label": 2, "mask": "n01484850/c.png", "image": "n01484850/c.JPEG"}]}"#;
    let seeds = vec![text.as_bytes().to_vec()];
    assert!(parse_split(&seeds[0]));
    mutate::never_panics(
        "split_file",
        0x5917,
        CASES,
        &seeds,
        &mutate::regressions("split_file"),
        parse_split,
    );
}

pub fn parse_mapping(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    data::datasets::parse_objectnet_mapping(text, Path::new("folder_to_objectnet_label.json"))
        .is_ok()
}

#[test]
fn objectnet_mapping_never_panics() {
    let pairs: Vec<String> = data::labels::objectnet_classes()
        .iter()
        .take(6)
        .map(|c| format!("{:?}: {:?}", c.folder, c.label))
        .chain(["\"not_in_imagenet\": \"Not in ImageNet\"".to_string()])
        .collect();
    let seeds = vec![format!("{{{}}}", pairs.join(", ")).into_bytes()];
    assert!(parse_mapping(&seeds[0]));
    mutate::never_panics(
        "objectnet_mapping",
        0x0B7E,
        CASES,
        &seeds,
        &mutate::regressions("objectnet_mapping"),
        parse_mapping,
    );
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gtsegs")
        .join(name)
}

/// Opens a corrupted copy and reads every entry, catching a panic.
fn read_all(path: &Path) -> std::thread::Result<usize> {
    std::panic::catch_unwind(|| match GtSegs::open(path) {
        Ok(ds) => (0..ds.len()).filter(|&i| ds.get(i).is_ok()).count(),
        Err(_) => 0,
    })
}

#[test]
fn corrupted_files_give_a_typed_error_never_a_panic() {
    let good = std::fs::read(fixture("gtsegs_small.mat")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupt.mat");
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in (0..good.len()).step_by(61) {
        cases.push((format!("truncated at {cut}"), good[..cut].to_vec()));
    }
    for at in (512..good.len()).step_by(37) {
        let mut b = good.clone();
        b[at] ^= 0xff;
        cases.push((format!("byte {at} flipped"), b));
        let mut b = good.clone();
        let end = (at + 8).min(b.len());
        b[at..end].fill(0xff);
        cases.push((format!("bytes {at}.. set to 0xff"), b));
    }
    let mut panics = Vec::new();
    let mut fully_read = 0;
    for (what, bytes) in &cases {
        std::fs::write(&path, bytes).unwrap();
        match read_all(&path) {
            Ok(4) => fully_read += 1,
            Ok(_) => {}
            Err(_) => panics.push(what.clone()),
        }
    }
    assert!(panics.is_empty(), "panicked on: {panics:?}");
    // Sanity: the untouched file reads fully and the cases are many.
    assert_eq!(read_all(&fixture("gtsegs_small.mat")).unwrap(), 4);
    assert!(cases.len() > 1000, "{}", cases.len());
    assert!(fully_read < cases.len(), "no corruption was noticed");
}

/// The `.mat` reader through its public entry point (a path), as the fuzz target calls it.
pub fn read_mat(bytes: &[u8]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gtsegs_ijcv.mat");
    std::fs::write(&path, bytes).unwrap();
    match GtSegs::open(&path) {
        Ok(g) => (0..g.len().min(64)).all(|i| g.get(i).is_ok()),
        Err(_) => false,
    }
}

#[test]
fn mat_regressions_never_panic() {
    let seeds = vec![std::fs::read(fixture("gtsegs_small.mat")).unwrap()];
    assert!(read_mat(&seeds[0]));
    mutate::never_panics(
        "mat",
        0x6A75,
        0,
        &seeds,
        &mutate::regressions("mat"),
        read_mat,
    );
}
