//! The segmentation test on non-constant relevance maps: a random 2×2-patch model on a
//! `--seg-folder`, checked against the same steps done by hand with the data, relevance and
//! metrics crates (resize to the input size, PIL-nearest mask, predicted class, NaN for a
//! constant map as the reference's 0/0 gives).

mod common;

use candle_core::{Device, Tensor};
use data::preprocess::{decode_rgb, segtest_transform, Normalization};
use evaluate::metrics::SegMetrics;
use relevance::Explainer;

#[test]
fn seg_folder_matches_the_steps_done_by_hand() {
    let d = tempfile::tempdir().unwrap();
    let (imgs, masks) = (d.path().join("set"), d.path().join("set-masks"));
    // Three images, one of them not at the input size (40x24 → 32x32 without keeping aspect).
    let sizes = [(32u32, 32u32), (40, 24), (32, 32)];
    for (i, &(w, h)) in sizes.iter().enumerate() {
        let img = data::synthetic::pattern(w, h, i, i);
        let p = imgs.join(format!("n01440764/img{i}.png"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        img.save(&p).unwrap();
        let m = data::synthetic::imagenet_s_mask(w, h, &[1]);
        let p = masks.join(format!("n01440764/img{i}.png"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        m.save(&p).unwrap();
    }
    let cfg = model::VitConfig {
        num_classes: 10,
        ..model::VitConfig::vit(8, 2, 2, 32, 16)
    };
    let dev = Device::Cpu;
    let vit = model::Vit::random(&cfg, 7, &dev).unwrap();
    let mdir = d.path().join("rand");
    std::fs::create_dir_all(&mdir).unwrap();
    model::save_params(vit.params(), &mdir.join("model.safetensors")).unwrap();
    std::fs::write(
        mdir.join("config.json"),
        r#"{"architecture": "vit_tiny_patch16_224", "num_classes": 10,
            "model_args": {"img_size": 32, "patch_size": 16, "embed_dim": 8, "depth": 2,
                           "num_heads": 2, "num_classes": 10}}"#,
    )
    .unwrap();

    let seg = format!("set={}:{}", imgs.display(), masks.display());
    let s = common::run(&[
        "--checkpoint",
        mdir.to_str().unwrap(),
        "--seg-folder",
        &seg,
        "--seg-batch-size",
        "2",
        "--out",
        d.path().join("out").to_str().unwrap(),
        "--device",
        "cpu",
        "--quiet",
    ]);
    assert_eq!(s.segmentation.len(), 4);

    // By hand, in the same batches (2 + 1).
    let mut xs = Vec::new();
    let mut ms: Vec<Vec<u8>> = Vec::new();
    for i in 0..3 {
        let img = decode_rgb(&imgs.join(format!("n01440764/img{i}.png"))).unwrap();
        xs.push(segtest_transform(&img, 32, &Normalization::HALF));
        let m = data::imagenet_s::decode_mask(&masks.join(format!("n01440764/img{i}.png")))
            .unwrap()
            .binary
            .resize_nearest_pil(32, 32);
        ms.push(m.data.iter().map(|&v| v as u8).collect());
    }
    let mut non_constant = 0;
    for (e, row) in Explainer::ALL.iter().zip(&s.segmentation) {
        assert_eq!(row.explainer, e.name());
        let mut acc = SegMetrics::new();
        for batch in [0..2, 2..3] {
            let n = batch.len();
            let flat: Vec<f32> = xs[batch.clone()].concat();
            let x = Tensor::from_vec(flat, (n, 3, 32, 32), &dev).unwrap();
            let r = relevance::explain(&vit, &x, *e, None).unwrap();
            let maps = r.map.reshape((n, 1024)).unwrap().to_vec2::<f32>().unwrap();
            for ((map, i), &degenerate) in maps.iter().zip(batch).zip(&r.degenerate) {
                // The reference's 0/0 for a constant map.
                let map = if degenerate {
                    vec![f32::NAN; map.len()]
                } else {
                    map.clone()
                };
                acc.add(&map, &ms[i]).unwrap();
            }
            non_constant += n - r.degenerate_count();
        }
        let want = acc.finish();
        assert_eq!(row.images, 3);
        assert_eq!(
            [row.pixel_acc, row.miou, row.map, row.mass_acc, row.pointing],
            [
                100.0 * want.pixel_acc,
                100.0 * want.miou,
                100.0 * want.map,
                100.0 * want.mass_acc,
                100.0 * want.pointing
            ],
            "{e}"
        );
    }
    // Most maps are not constant (GradCAM's clamp at zero flattens two of them here).
    assert_eq!(non_constant, 10, "{non_constant}");
}

fn parse(args: &[&str]) -> evaluate::EvalArgs {
    <evaluate::EvalArgs as clap::Parser>::try_parse_from(
        std::iter::once("evaluate").chain(args.iter().copied()),
    )
    .unwrap()
}

/// A 0/255 mask in one entry of `gtsegs_ijcv.mat` skips that entry, named by file and index,
/// and the run scores the others.
#[test]
fn a_mask_that_is_not_0_1_skips_its_entry_only() {
    use data::segmentation::mat::{write_gtsegs, GtSegs, Sample};
    use data::SampleSource;

    let d = tempfile::tempdir().unwrap();
    let mat = d.path().join("gtsegs_ijcv.mat");
    let sample = |q: usize, fg: u8| Sample {
        image: image::RgbImage::from_pixel(20, 12, image::Rgb(common::colour(q))),
        mask: image::GrayImage::from_fn(20, 12, |x, _| image::Luma([if x < 10 { fg } else { 0 }])),
    };
    write_gtsegs(&mat, &[sample(0, 1), sample(2, 255), sample(3, 1)]).unwrap();

    let source = data::segmentation::GtSegsSource {
        gtsegs: std::sync::Arc::new(GtSegs::open(&mat).unwrap()),
        indices: vec![0, 1, 2],
        size: 16,
    };
    assert!(source.load(0).is_ok());
    let msg = source.load(1).unwrap_err().to_string();
    assert!(
        msg.contains("gtsegs_ijcv.mat")
            && msg.contains("entry 1:")
            && msg.contains("mask holds 255 at 120 pixel(s)"),
        "{msg}"
    );
    assert_eq!(source.path(1), d.path().join("gtsegs_ijcv.mat#1"));

    let model = d.path().join("tiny");
    common::write_model(&model, &common::POSITIONS);
    let s = common::run(&[
        "--suite",
        "segmentation",
        "--checkpoint",
        model.to_str().unwrap(),
        "--imagenet-seg",
        mat.to_str().unwrap(),
        "--out",
        d.path().join("out").to_str().unwrap(),
        "--device",
        "cpu",
        "--quiet",
    ]);
    assert_eq!(s.segmentation.len(), Explainer::ALL.len());
    for row in &s.segmentation {
        assert_eq!(row.images, 2, "{}: entries 0 and 2 scored", row.explainer);
    }
}

/// A well-formed `gtsegs_ijcv.mat` with no entry stops the run with an error naming it.
#[test]
fn a_mat_file_without_entries_is_named() {
    let d = tempfile::tempdir().unwrap();
    let mat = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data/tests/fixtures/gtsegs/gtsegs_empty.mat");
    let model = d.path().join("tiny");
    common::write_model(&model, &common::POSITIONS);
    let args = parse(&[
        "--suite",
        "segmentation",
        "--checkpoint",
        model.to_str().unwrap(),
        "--imagenet-seg",
        mat.to_str().unwrap(),
        "--out",
        d.path().join("out").to_str().unwrap(),
        "--device",
        "cpu",
        "--quiet",
    ]);
    let msg = format!("{:#}", evaluate::run(&args).unwrap_err());
    assert!(
        msg.contains("gtsegs_empty.mat") && msg.contains("0 entries"),
        "{msg}"
    );
}
