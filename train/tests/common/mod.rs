//! The synthetic ImageNet / ImageNet-S layout and tiny model (4 classes x 3 images, 40x36 px;
//! width 32, depth 2, 1000 classes) that the training tests run on.

use std::path::PathBuf;

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub images: PathBuf,
    pub masks: PathBuf,
    pub arch: PathBuf,
}

pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let spec = data::synthetic::SyntheticSpec {
        classes: 4,
        images_per_class: 3,
        width: 40,
        height: 36,
        bad_files: false,
    };
    let s = data::synthetic::write_imagenet_s(dir.path(), &spec).unwrap();
    let mut cfg = model::VitConfig::vit(32, 2, 2, 32, 8);
    cfg.num_classes = 1000;
    let arch = dir.path().join("arch.json");
    std::fs::write(&arch, serde_json::to_string(&cfg).unwrap()).unwrap();
    Fixture {
        root: dir.path().to_path_buf(),
        images: s.images,
        masks: s.masks,
        arch,
        _dir: dir,
    }
}
