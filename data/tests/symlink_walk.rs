//! A class folder reached twice through a symbolic link (or a link loop) is walked once and
//! reported: no image is counted twice.
#![cfg(unix)]

use data::imagenet_s::{ImageNetS, SplitOptions};
use std::os::unix::fs::symlink;

#[test]
fn linked_class_folders_are_walked_once_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let spec = data::synthetic::SyntheticSpec {
        classes: 2,
        images_per_class: 2,
        width: 20,
        height: 18,
        bad_files: false,
    };
    let s = data::synthetic::write_imagenet_s(dir.path(), &spec).unwrap();
    let ds = ImageNetS::new(&s.masks, &s.images);
    let clean = ds.check().unwrap();
    // A usable wnid the fixture did not write, as a link to the first class (both roots),
    // and a link from a class folder back to the mask root (a loop).
    let other = data::labels::imagenet_s_categories()
        .iter()
        .find(|c| c.usable && !s.classes.iter().any(|w| w == c.wnid))
        .unwrap()
        .wnid;
    symlink(s.masks.join(&s.classes[0]), s.masks.join(other)).unwrap();
    symlink(s.images.join(&s.classes[0]), s.images.join(other)).unwrap();
    symlink(&s.masks, s.masks.join("zz-loop")).unwrap();
    let linked = ds.check().unwrap();
    assert_eq!(linked.num_images(), clean.num_images(), "{linked}");
    assert_eq!(linked.num_classes(), clean.num_classes(), "{linked}");
    let mut reported: Vec<_> = linked
        .linked_folders
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    reported.sort();
    let mut want = vec![other.to_string(), "zz-loop".to_string()];
    want.sort();
    assert_eq!(reported, want, "{linked}");
    let (split, _) = ds
        .build_split(&SplitOptions {
            num_train_classes: 10,
            train_per_class: 10,
            val_per_class: 0,
            seed: None,
        })
        .unwrap();
    assert_eq!(split.train.len(), clean.num_images());
}
