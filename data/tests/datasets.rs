//! Readers, checks, the ImageNet-S split and the loader on synthetic layouts with planted bad
//! files.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use data::imagenet_s::{decode_mask, sample_rng, train_transform, val_transform};
use data::loader::{shuffled_order, Loader, LoaderOptions, Progress};
use data::synthetic::{write_benchmark, write_imagenet_s, Synthetic, SyntheticSpec};
use data::{
    Benchmark, DataError, EvalDataset, EvalSource, EvalTransform, ImageNetS, ImageNetSSplit,
    Normalization, PairTransform, Protocol, SplitOptions, TrainSource,
};

fn spec() -> SyntheticSpec {
    SyntheticSpec::default()
}

fn open(b: Benchmark, dir: &std::path::Path) -> (Synthetic, EvalDataset) {
    let syn = write_benchmark(b, dir, &spec()).unwrap();
    let ds = EvalDataset::open(b, &syn.root).unwrap();
    (syn, ds)
}

/// Every reader: counts, ignored files, unknown folders, and the decode check.
#[test]
fn every_reader_reports_planted_files() {
    let tmp = tempfile::tempdir().unwrap();
    for b in Benchmark::ALL {
        let (syn, mut ds) = open(b, tmp.path());
        let name = b.name();
        // Truncated and empty files have image extensions: listed until decoded.
        assert_eq!(ds.len(), syn.good_images + 2, "{name}");
        assert_eq!(ds.report.num_classes(), syn.classes.len(), "{name}");
        let mut non_images = ds.report.non_image_files.clone();
        non_images.sort();
        let mut want = syn.planted.non_image_files.clone();
        want.sort();
        assert_eq!(non_images, want, "{name}");
        assert_eq!(
            ds.report.unknown_class_folders, syn.planted.unknown_class_folders,
            "{name}"
        );
        let excluded: Vec<String> = ds.report.excluded_class_folders.keys().cloned().collect();
        assert_eq!(excluded, syn.planted.excluded_class_folders, "{name}");
        assert!(!ds.report.decoded);

        let report = ds.check(None).clone();
        assert!(report.decoded);
        let mut bad: Vec<PathBuf> = report
            .unreadable_images
            .iter()
            .map(|(p, _)| p.clone())
            .collect();
        bad.sort();
        let mut want_bad = [syn.planted.truncated.clone(), syn.planted.empty.clone()].concat();
        want_bad.sort();
        assert_eq!(bad, want_bad, "{name}");
        assert_eq!(ds.len(), syn.good_images, "{name}");
        assert_eq!(report.num_images(), syn.good_images, "{name}");
        // The unreadable images are named in the printed report.
        let text = report.to_string();
        assert!(text.contains("zz_truncated"), "{text}");
        assert!(text.contains("unknown class folders"), "{text}");
        // Sorted, deterministic order.
        let paths: Vec<&PathBuf> = ds.samples.iter().map(|s| &s.path).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted, "{name}");
    }
}

#[test]
fn imagenet_a_labels_in_both_spaces() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, ds) = open(Benchmark::ImageNetA, tmp.path());
    let s = ds.samples.iter().find(|s| s.class == "n01498041").unwrap();
    // stingray: 1000-way index 6, first of the 200 ImageNet-A classes.
    assert_eq!(s.targets(Protocol::Paper), &[6]);
    let mask = Benchmark::ImageNetA.label_mask(Protocol::Official).unwrap();
    assert_eq!(mask.len(), 200);
    assert_eq!(mask.iter().position(|&i| i == 6), Some(0));
    assert_eq!(Benchmark::ImageNetA.label_mask(Protocol::Paper), None);
    // n01440764 (tench) is an ImageNet class but not an ImageNet-A one.
    assert!(ds.report.unknown_class_folders[0].ends_with("n01440764"));
}

#[test]
fn imagenet_r_and_sketch_and_val_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, r) = open(Benchmark::ImageNetR, tmp.path());
    let goldfish = r.samples.iter().find(|s| s.class == "n01443537").unwrap();
    assert_eq!(goldfish.targets, vec![1]);
    let mask = Benchmark::ImageNetR.label_mask(Protocol::Official).unwrap();
    assert_eq!(&mask[..2], &[1, 2]);
    for b in [Benchmark::ImageNetVal, Benchmark::Sketch] {
        let (_, ds) = open(b, tmp.path());
        let tench = ds.samples.iter().find(|s| s.class == "n01440764").unwrap();
        assert_eq!(tench.targets, vec![0]);
        // Classes are spread over the table: 0, 333, 666.
        let last = ds.samples.last().unwrap();
        assert_eq!(last.targets, vec![666]);
        assert_eq!(last.class, data::labels::imagenet_wnids()[666]);
    }
}

#[test]
fn imagenet_v2_folders_are_class_indices() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, ds) = open(Benchmark::ImageNetV2, tmp.path());
    let classes: Vec<(&str, u32)> = ds
        .samples
        .iter()
        .map(|s| (s.class.as_str(), s.targets[0]))
        .collect();
    assert!(classes.contains(&("333", 333)));
    assert!(classes.contains(&("0", 0)));
    // "1000" is not a class.
    assert!(ds.report.unknown_class_folders[0].ends_with("1000"));
    assert!(ds.root.ends_with("imagenetv2-matched-frequency-format-val"));
}

#[test]
fn objectnet_mapping_and_protocols() {
    let tmp = tempfile::tempdir().unwrap();
    let (syn, ds) = open(Benchmark::ObjectNet, tmp.path());
    assert!(ds.root.ends_with("objectnet-1.0/images"));
    let alarm = ds
        .samples
        .iter()
        .find(|s| s.class == "alarm_clock")
        .unwrap();
    assert_eq!(alarm.targets, vec![409, 530]);
    assert_eq!(alarm.targets(Protocol::Paper), &[409]);
    assert_eq!(alarm.targets(Protocol::Official), &[409, 530]);
    assert_eq!(alarm.targets(Protocol::Testbed), &[409, 530]);
    // ObjectNet's own code ranks all 1000 logits of the uncropped image; only imagenet-testbed
    // cuts the border and restricts the ranking to the 125 mapped classes.
    assert_eq!(Benchmark::ObjectNet.border(Protocol::Official), 0);
    assert_eq!(Benchmark::ObjectNet.border(Protocol::Paper), 0);
    assert_eq!(Benchmark::ObjectNet.border(Protocol::Testbed), 2);
    assert_eq!(Benchmark::ObjectNet.label_mask(Protocol::Official), None);
    assert_eq!(Benchmark::ObjectNet.label_mask(Protocol::Paper), None);
    let sub = Benchmark::ObjectNet.label_mask(Protocol::Testbed).unwrap();
    assert_eq!(sub.len(), 125);
    assert!(sub.contains(&409) && sub.contains(&530));
    // A and R keep their 200-class masks under the testbed rule.
    assert_eq!(
        Benchmark::ImageNetA.label_mask(Protocol::Testbed),
        Benchmark::ImageNetA.label_mask(Protocol::Official)
    );
    assert_eq!(Benchmark::ImageNetA.border(Protocol::Testbed), 0);
    // Opening images/ directly works too (mappings/ found next to it).
    let direct = EvalDataset::open(Benchmark::ObjectNet, &syn.root.join("images")).unwrap();
    assert_eq!(direct.samples, ds.samples);
    assert_eq!(direct.report.excluded_class_folders.len(), 1);
}

#[test]
fn si_score_class_names_with_spaces() {
    let tmp = tempfile::tempdir().unwrap();
    let syn = write_benchmark(
        Benchmark::SiScoreRotation,
        tmp.path(),
        &SyntheticSpec {
            classes: 112,
            images_per_class: 1,
            width: 8,
            height: 8,
            bad_files: false,
        },
    )
    .unwrap();
    let ds = EvalDataset::open(Benchmark::SiScoreRotation, &syn.root).unwrap();
    assert_eq!(ds.report.num_classes(), 112);
    let bb = ds
        .samples
        .iter()
        .find(|s| s.class == "balance beam")
        .unwrap();
    assert_eq!(bb.targets, vec![416]);
    assert!(ds.report.is_clean());
}

#[test]
fn layout_errors_say_what_is_expected() {
    let tmp = tempfile::tempdir().unwrap();
    let err = EvalDataset::open(Benchmark::ImageNetA, &tmp.path().join("missing")).unwrap_err();
    assert!(matches!(err, DataError::Layout { .. }));
    std::fs::create_dir_all(tmp.path().join("empty")).unwrap();
    let msg = EvalDataset::open(Benchmark::ImageNetA, &tmp.path().join("empty"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("has no class folders") && msg.contains("200 wnid folders like n01498041/"),
        "{msg}"
    );
    assert!(Benchmark::from_name("imagenet-q").is_err());
    assert_eq!(
        Benchmark::from_name("objectnet").unwrap(),
        Benchmark::ObjectNet
    );
}

#[test]
fn imagenet_s_check_split_and_split_file() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = SyntheticSpec {
        classes: 5,
        images_per_class: 4,
        ..SyntheticSpec::default()
    };
    let syn = write_imagenet_s(tmp.path(), &spec).unwrap();
    let ds = ImageNetS::from_root(&syn.root);
    assert!(ds.paired);

    let report = ds.check().unwrap();
    let bad: Vec<PathBuf> = report.bad_masks.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(bad, syn.planted.bad_masks);
    assert!(
        report.bad_masks[0].1.contains("2 class ids"),
        "{:?}",
        report.bad_masks
    );
    assert!(
        report.bad_masks[1].1.contains("0 class ids"),
        "{:?}",
        report.bad_masks
    );
    assert_eq!(report.missing_images, syn.planted.missing_images);
    assert_eq!(report.missing_masks, syn.planted.missing_masks);
    let unreadable: Vec<PathBuf> = report
        .unreadable_images
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(unreadable, syn.planted.truncated);
    assert_eq!(
        report.unknown_class_folders,
        syn.planted.unknown_class_folders
    );
    assert_eq!(report.non_image_files, syn.planted.non_image_files);
    assert_eq!(report.excluded_class_folders.len(), 1);
    assert_eq!(report.num_images(), 5 * 4);

    let opts = SplitOptions {
        num_train_classes: 3,
        train_per_class: 3,
        val_per_class: 1,
        seed: None,
    };
    let (split, _) = ds.build_split(&opts).unwrap();
    assert_eq!(split.train.len(), 9);
    assert_eq!(split.val.len(), 2);
    // Sorted classes; the bad files of the first class are skipped.
    let first = &syn.classes[0];
    assert_eq!(split.train[0].mask, format!("{first}/{first}_1000.png"));
    assert_eq!(split.train[0].image, format!("{first}/{first}_1000.JPEG"));
    assert_eq!(
        split.train[0].label as usize,
        data::labels::wnid_to_index(first).unwrap()
    );
    assert_eq!(
        split.train_classes(),
        syn.classes[..3]
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
    );
    assert_eq!(split.val[1].wnid, syn.classes[4]);

    // Deterministic, and the file round-trips.
    let (again, _) = ds.build_split(&opts).unwrap();
    assert_eq!(again, split);
    let f = tmp.path().join("split.json");
    split.save(&f).unwrap();
    assert_eq!(ImageNetSSplit::load(&f).unwrap(), split);
    std::fs::write(&f, "{}").unwrap();
    assert!(matches!(
        ImageNetSSplit::load(&f),
        Err(DataError::SplitFile { .. })
    ));

    // A seed shuffles the classes reproducibly.
    let seeded = SplitOptions {
        seed: Some(7),
        ..opts
    };
    let (s1, _) = ds.build_split(&seeded).unwrap();
    let (s2, _) = ds.build_split(&seeded).unwrap();
    assert_eq!(s1, s2);
    let mut all: Vec<&str> = s1.train_classes();
    all.extend(s1.val.iter().map(|s| s.wnid.as_str()));
    all.sort();
    assert_eq!(
        all,
        syn.classes.iter().map(|s| s.as_str()).collect::<Vec<_>>()
    );
}

#[test]
fn imagenet_s_transforms_keep_image_and_mask_aligned() {
    let tmp = tempfile::tempdir().unwrap();
    let syn = write_imagenet_s(
        tmp.path(),
        &SyntheticSpec {
            bad_files: false,
            ..spec()
        },
    )
    .unwrap();
    let ds = ImageNetS::from_root(&syn.root);
    let (split, _) = ds.build_split(&SplitOptions::default()).unwrap();
    assert_eq!(split.train.len(), 3 * 2);
    let s = &split.train[0];
    let (img, mask) = ds.load_pair(s).unwrap();
    let m = decode_mask(&ds.masks.join(&s.mask)).unwrap();
    assert_eq!(m.class_ids.len(), 1);
    // Foreground is the centre rectangle; the ignore ring counts as background.
    let fg: f32 = mask.data.iter().sum();
    let (w, h) = (mask.width, mask.height);
    assert_eq!(fg as u32, (3 * w / 4 - w / 4) * (3 * h / 4 - h / 4));

    let (x, mv) = val_transform(&img, &mask, &Normalization::HALF);
    assert_eq!(x.len(), 3 * 224 * 224);
    assert_eq!((mv.width, mv.height), (224, 224));
    // Fractional edges are kept (no re-binarisation).
    assert!(mv.data.iter().any(|&v| v > 0.0 && v < 1.0));
    assert!(mv.data.iter().all(|&v| (0.0..=1.0).contains(&v)));

    // Same (seed, epoch, index): same crop and flip; the mask follows the image.
    let a = train_transform(&img, &mask, &mut sample_rng(1, 0, 0), &Normalization::HALF);
    let b = train_transform(&img, &mask, &mut sample_rng(1, 0, 0), &Normalization::HALF);
    assert_eq!(a, b);
    let outs: Vec<_> = (0..8)
        .map(|e| train_transform(&img, &mask, &mut sample_rng(1, e, 0), &Normalization::HALF).1)
        .collect();
    assert!(
        outs.iter().any(|m| m != &outs[0]),
        "crops/flips vary over epochs"
    );
}

#[test]
fn loader_batches_in_order_and_reports_skips() {
    let tmp = tempfile::tempdir().unwrap();
    let syn = write_benchmark(
        Benchmark::ImageNetVal,
        tmp.path(),
        &SyntheticSpec {
            classes: 3,
            images_per_class: 3,
            ..spec()
        },
    )
    .unwrap();
    let ds = EvalDataset::open(Benchmark::ImageNetVal, &syn.root).unwrap();
    let n = ds.len();
    assert_eq!(n, 11);
    let source = Arc::new(EvalSource {
        samples: ds.samples.clone(),
        transform: EvalTransform::PAPER,
    });
    let seen = Arc::new(Mutex::new(Vec::<Progress>::new()));
    let seen2 = seen.clone();
    let loader = Loader::new(
        source.clone(),
        (0..n).collect(),
        LoaderOptions {
            batch_size: 4,
            threads: 2,
            prefetch: 2,
        },
        Some(Box::new(move |p: &Progress| seen2.lock().unwrap().push(*p))),
    )
    .unwrap();
    let batches: Vec<_> = loader.map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 3);
    let indices: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    let mut want: Vec<usize> = (0..n).collect();
    // The truncated and empty files of the first class are skipped and reported.
    let skipped: Vec<PathBuf> = batches
        .iter()
        .flat_map(|b| b.skipped.iter().map(|(p, _)| p.clone()))
        .collect();
    assert_eq!(skipped.len(), 2);
    want.retain(|&i| !skipped.contains(&ds.samples[i].path));
    assert_eq!(indices, want);
    // Sorted order: three images of class 0, then its empty file (skipped) close the first batch.
    assert_eq!(batches[0].images.dims(), &[3, 3, 224, 224]);
    assert_eq!(batches[0].skipped.len(), 1);
    assert!(batches[0].masks.is_none());
    assert_eq!(batches[0].labels, vec![0, 0, 0]);
    assert_eq!(batches[1].labels, vec![333, 333, 333]);
    let p = seen.lock().unwrap().last().copied().unwrap();
    assert_eq!(
        (p.images_done, p.images_total, p.skipped, p.batches),
        (n, n, 2, 3)
    );

    // The same order gives the same tensors whatever the thread count.
    let one = Loader::new(
        source,
        vec![1, 0],
        LoaderOptions {
            batch_size: 2,
            threads: 1,
            prefetch: 1,
        },
        None,
    )
    .unwrap()
    .next()
    .unwrap()
    .unwrap();
    let a = batches[0]
        .images
        .get(0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = one
        .images
        .get(1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(a, b);
}

#[test]
fn loader_on_imagenet_s_gives_masks() {
    let tmp = tempfile::tempdir().unwrap();
    let syn = write_imagenet_s(tmp.path(), &spec()).unwrap();
    let ds = ImageNetS::from_root(&syn.root);
    let (split, _) = ds.build_split(&SplitOptions::default()).unwrap();
    let order = shuffled_order(split.train.len(), 3, 0);
    assert_eq!(order, shuffled_order(split.train.len(), 3, 0));
    let src = Arc::new(TrainSource {
        examples: data::train_source::seg_examples(&ds, &split.train),
        transform: PairTransform::Paper,
        norm: Normalization::HALF,
        crop: data::imagenet_s::CROP,
        augment: Some((3, 0)),
    });
    let run = || -> Vec<f32> {
        let mut l = Loader::new(
            src.clone(),
            order.clone(),
            LoaderOptions {
                batch_size: 8,
                threads: 2,
                prefetch: 1,
            },
            None,
        )
        .unwrap();
        let b = l.next().unwrap().unwrap();
        assert_eq!(b.masks.as_ref().unwrap().dims(), &[b.len(), 1, 224, 224]);
        assert_eq!(
            b.labels,
            order
                .iter()
                .map(|&i| split.train[i].label)
                .collect::<Vec<_>>()
        );
        b.masks
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(run(), run());
}
