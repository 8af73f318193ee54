//! The training source: class folders and ImageNet-S pairs as examples, the paired transforms,
//! and batches whose pixels depend on (seed, epoch, example) only.

use std::sync::Arc;

use data::imagenet_s::{sample_rng, train_transform_sized, ImageNetS};
use data::loader::{load_batch, shuffled_order, Loader, LoaderOptions};
use data::synthetic::{write_imagenet_s, SyntheticSpec};
use data::train_source::{folder_examples, seg_examples};
use data::{DataError, Normalization, PairTransform, SplitOptions, TrainExample, TrainSource};

fn spec(w: u32, h: u32) -> SyntheticSpec {
    SyntheticSpec {
        classes: 3,
        images_per_class: 2,
        width: w,
        height: h,
        bad_files: false,
    }
}

fn pairs(dir: &std::path::Path, w: u32, h: u32) -> Vec<TrainExample> {
    let syn = write_imagenet_s(dir, &spec(w, h)).unwrap();
    let ds = ImageNetS::from_root(&syn.root);
    let (split, _) = ds.build_split(&SplitOptions::default()).unwrap();
    seg_examples(&ds, &split.train)
}

fn source(
    examples: Vec<TrainExample>,
    t: PairTransform,
    augment: Option<(u64, u64)>,
) -> TrainSource {
    TrainSource {
        examples,
        transform: t,
        norm: Normalization::HALF,
        crop: 32,
        augment,
    }
}

fn pixels(b: &data::Batch, i: usize) -> Vec<f32> {
    b.images
        .get(i)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn class_folders_are_labelled_by_wnid_in_sorted_order() {
    let tmp = tempfile::tempdir().unwrap();
    let syn = write_imagenet_s(tmp.path(), &spec(40, 36)).unwrap();
    let all = folder_examples(&syn.images, None).unwrap();
    // Three classes of two, and the merge-target folder (an ImageNet class all the same).
    assert_eq!(all.len(), 7);
    assert!(all.windows(2).all(|w| w[0].image < w[1].image));
    for ex in &all {
        let wnid = ex
            .image
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        assert_eq!(Some(ex.label as usize), data::labels::wnid_to_index(wnid));
        assert!(ex.mask.is_none());
    }
    let first = all[0].image.parent().unwrap();
    let limited = folder_examples(&syn.images, Some(1)).unwrap();
    assert_eq!(
        limited,
        all.iter()
            .filter(|e| e.image.parent().unwrap() == first)
            .cloned()
            .collect::<Vec<_>>()
    );

    std::fs::create_dir(syn.images.join("not_a_wnid")).unwrap();
    let msg = folder_examples(&syn.images, None).unwrap_err().to_string();
    assert!(msg.contains("unknown wnid not_a_wnid"), "{msg}");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let msg = folder_examples(&empty, None).unwrap_err().to_string();
    assert!(msg.contains("holds no images"), "{msg}");
    assert!(folder_examples(&tmp.path().join("missing"), None).is_err());
}

#[test]
fn training_pixels_depend_on_seed_epoch_and_example_only() {
    let tmp = tempfile::tempdir().unwrap();
    let ex = pairs(tmp.path(), 40, 36);
    let src = source(ex.clone(), PairTransform::Paper, Some((7, 1)));
    // Example 3 loaded alone, then inside a shuffled epoch on two threads: the same crop/flip.
    let alone = load_batch(&src, &[3]).unwrap();
    assert_eq!(alone.images.dims(), &[1, 3, 32, 32]);
    assert_eq!(alone.masks.as_ref().unwrap().dims(), &[1, 1, 32, 32]);
    let order = shuffled_order(ex.len(), 7, 1);
    let opts = LoaderOptions {
        batch_size: 4,
        threads: 2,
        prefetch: 2,
    };
    let batches: Vec<data::Batch> = Loader::new(Arc::new(src.clone()), order.clone(), opts, None)
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    let at = order.iter().position(|&i| i == 3).unwrap();
    let b = &batches[at / 4];
    assert_eq!(b.indices[at % 4], 3);
    assert_eq!(pixels(b, at % 4), pixels(&alone, 0));
    // And it is the paper's transform with the per-sample generator.
    let (img, mask) =
        data::imagenet_s::decode_pair(&ex[3].image, ex[3].mask.as_ref().unwrap()).unwrap();
    let (x, _) = train_transform_sized(
        &img,
        &mask,
        &mut sample_rng(7, 1, 3),
        &Normalization::HALF,
        32,
    );
    assert_eq!(pixels(&alone, 0), x);
    // Validation: no augmentation, the centre crop.
    let val = load_batch(&source(ex, PairTransform::Paper, None), &[3]).unwrap();
    assert_eq!(val.labels, alone.labels);
}

#[test]
fn plain_keeps_the_stored_size_and_class_folders_take_the_eval_transform() {
    let tmp = tempfile::tempdir().unwrap();
    let ex = pairs(tmp.path(), 32, 30);
    let b = load_batch(
        &source(ex.clone(), PairTransform::Plain, Some((1, 0))),
        &[1],
    )
    .unwrap();
    let img = data::preprocess::decode_rgb(&ex[1].image).unwrap();
    let (w, h) = (img.width() as usize, img.height() as usize);
    assert_eq!(b.images.dims(), &[1, 3, h, w]);
    assert_eq!(b.masks.as_ref().unwrap().dims(), &[1, 1, h, w]);
    assert_eq!(
        pixels(&b, 0),
        data::preprocess::to_chw(&img, &Normalization::HALF)
    );

    let tmp2 = tempfile::tempdir().unwrap();
    let syn = write_imagenet_s(tmp2.path(), &spec(40, 36)).unwrap();
    let folders = folder_examples(&syn.images, None).unwrap();
    let b = load_batch(&source(folders, PairTransform::Paper, Some((1, 0))), &[0]).unwrap();
    assert_eq!(b.images.dims(), &[1, 3, 32, 32]);
    assert!(b.masks.is_none());
}

#[test]
fn a_broken_pair_fails_the_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ex = pairs(tmp.path(), 40, 36);
    // A mask of another size than its image.
    let other = write_imagenet_s(&tmp.path().join("other"), &spec(30, 30)).unwrap();
    let small_mask = std::fs::read_dir(other.masks.join(&other.classes[0]))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    ex[0].mask = Some(small_mask);
    let src = source(ex.clone(), PairTransform::Paper, None);
    assert!(matches!(
        load_batch(&src, &[1, 0]),
        Err(DataError::BadMask { .. })
    ));
    // The background loader skips it and says so in the batch.
    let opts = LoaderOptions {
        batch_size: 2,
        threads: 1,
        prefetch: 1,
    };
    let first = Loader::new(Arc::new(src), vec![0, 1], opts, None)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first.skipped.len(), 1);
    assert!(load_batch(&source(ex, PairTransform::Paper, None), &[99]).is_err());
}
