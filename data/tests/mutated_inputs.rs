//! The untrusted-input parsers of `data` (ImageNet-S mask PNGs and their class ids, split
//! files, the ObjectNet folder mapping) on a fixed budget of deterministically mutated inputs:
//! Ok or a typed error, never a panic. Also replays the crash corpus under `fuzz/regressions/`.

#[path = "../../model/tests/support/mutate.rs"]
mod mutate;

use data::imagenet_s::{decode_mask_bytes, ImageNetSSplit};
use std::path::Path;

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
