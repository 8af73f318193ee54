//! End-to-end runs of `evaluate::run` on the data crate's synthetic layouts of every dataset,
//! with the tiny model of `common` whose ranking of classes is known for every image colour.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{close, colour, run, write_model, write_solid, POSITIONS};
use data::segmentation::mat::{write_gtsegs, Sample};
use data::synthetic::{write_benchmark, SyntheticSpec};
use data::{Benchmark, EvalDataset};

/// Where each image goes on the circle: (dataset, first target of its class) → position of
/// image k = 0 and k = 1. The expected accuracies below follow by counting circle distances
/// (top-1: the class at the image's position; top-5: positions within ±2).
fn placement() -> BTreeMap<(&'static str, u32), [usize; 2]> {
    let q = |c: u32| POSITIONS.iter().position(|&p| p == c).unwrap();
    let mut m = BTreeMap::new();
    let mut put = |d: &'static str, c: u32, k0: usize, k1: usize| {
        m.insert((d, c), [k0, k1]);
    };
    // val: 333/k1 at 0's position (top-5 only), 666/k1 at 585 (6 away: miss).
    put("imagenet-val", 0, q(0), q(0));
    put("imagenet-val", 333, q(333), q(0));
    put("imagenet-val", 666, q(666), q(585));
    // v2: 0/k1 at 333 (top-5 only), everything else right.
    put("imagenet-v2", 0, q(0), q(333));
    put("imagenet-v2", 333, q(333), q(333));
    put("imagenet-v2", 666, q(666), q(666));
    // sketch: 0/k1 at 487 (top-5 only), 333 and 666 at 684 (5 and 6 away: misses).
    put("imagenet-sketch", 0, q(0), q(487));
    put("imagenet-sketch", 333, q(684), q(684));
    put("imagenet-sketch", 666, q(684), q(684));
    // A: 6/k1 at 728, 335/k1 at class 1, 684/k1 at 409 — three classes outside ImageNet-A.
    put("imagenet-a", 6, q(6), q(728));
    put("imagenet-a", 335, q(335), q(1));
    put("imagenet-a", 684, q(684), q(409));
    // R: 1/k1 and 487/k1 at class 0, outside ImageNet-R.
    put("imagenet-r", 1, q(1), q(0));
    put("imagenet-r", 263, q(263), q(263));
    put("imagenet-r", 487, q(487), q(0));
    // ObjectNet: alarm_clock maps to 409 then 530; its k1 image is predicted 530.
    put("objectnet", 409, q(409), q(530));
    put("objectnet", 606, q(606), q(606));
    put("objectnet", 783, q(783), q(6));
    put("si-score-location", 407, q(407), q(407));
    put("si-score-location", 585, q(585), q(585));
    put("si-score-location", 728, q(728), q(728));
    put("si-score-rotation", 407, q(407), q(585));
    put("si-score-rotation", 585, q(585), q(585));
    put("si-score-rotation", 728, q(728), q(728));
    put("si-score-size", 407, q(407), q(407));
    put("si-score-size", 585, q(585), q(728));
    put("si-score-size", 728, q(728), q(263));
    m
}

/// Writes every benchmark and replaces each readable image with a solid colour (same file
/// name; the planted README, text, truncated, empty and unknown-folder files stay).
fn write_data(root: &Path) {
    let spec = SyntheticSpec::default();
    let place = placement();
    for b in Benchmark::ALL {
        let s = write_benchmark(b, root, &spec).unwrap();
        let ds = EvalDataset::open(b, &s.root).unwrap();
        let mut written = 0;
        for sample in &ds.samples {
            let name = sample.path.file_name().unwrap().to_str().unwrap();
            if name.starts_with("zz_") {
                continue; // planted truncated / empty files
            }
            let k: usize = name[7..10].parse().unwrap(); // img_CC_KKK.ext
            let q = place[&(b.name(), sample.targets[0])][k];
            write_solid(&sample.path, 40 + 3 * k as u32, 30, q);
            written += 1;
        }
        assert_eq!(written, 6, "{b:?}");
    }
    // ImageNet-Segmentation: a 20x12 image whose left half is foreground, and a 16x16 image
    // without foreground.
    let left = Sample {
        image: image::RgbImage::from_pixel(20, 12, image::Rgb(colour(0))),
        mask: image::GrayImage::from_fn(20, 12, |x, _| image::Luma([u8::from(x < 10)])),
    };
    let empty = Sample {
        image: image::RgbImage::from_pixel(16, 16, image::Rgb(colour(3))),
        mask: image::GrayImage::new(16, 16),
    };
    let mat = root.join("imagenet-segmentation/gtsegs_ijcv.mat");
    std::fs::create_dir_all(mat.parent().unwrap()).unwrap();
    write_gtsegs(&mat, &[left, empty]).unwrap();
}

fn pct(k: u32) -> f64 {
    100.0 * f64::from(k) / 6.0
}

/// Re-running gives the same bytes apart from the date, and the measured throughput.
fn without_run_columns(csv: &str, drop: &[&str]) -> String {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let keep: Vec<usize> = (0..header.len())
        .filter(|&i| !drop.contains(&header[i]))
        .collect();
    std::iter::once(header.join(","))
        .chain(lines.map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            keep.iter().map(|&i| f[i]).collect::<Vec<_>>().join(",")
        }))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_dataset_under_both_protocols() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("data");
    let model_dir = d.path().join("runs/tiny");
    let out = d.path().join("results");
    write_data(&root);
    write_model(&model_dir, &POSITIONS);
    let args = [
        "--suite",
        "all",
        "--checkpoint",
        model_dir.to_str().unwrap(),
        "--data-root",
        root.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--batch-size",
        "4",
        "--seg-batch-size",
        "2",
        "--quiet",
    ];
    let s = run(&args);
    assert!(s.skipped.is_empty(), "{:?}", s.skipped);

    // (dataset) → (paper top-1, top-5, official top-1, top-5) in images out of 6.
    let expected: [(&str, [u32; 4]); 9] = [
        ("imagenet-val", [4, 5, 4, 5]),
        ("imagenet-v2", [5, 6, 5, 6]),
        // The 200-class mask turns 6/k1 into a top-1 hit and 684/k1 into a top-5 hit.
        ("imagenet-a", [3, 5, 4, 6]),
        ("imagenet-r", [4, 5, 5, 6]),
        ("imagenet-sketch", [1, 2, 1, 2]),
        // Any mapped class counts under the official protocol: alarm_clock predicted 530.
        ("objectnet", [4, 5, 5, 5]),
        ("si-score-location", [6, 6, 6, 6]),
        ("si-score-rotation", [5, 6, 5, 6]),
        ("si-score-size", [4, 5, 4, 5]),
    ];
    // Nine datasets under paper and official, plus ObjectNet under imagenet-testbed's rule (the
    // only set the testbed scores differently).
    assert_eq!(s.robustness.len(), 19);
    let testbed: Vec<_> = s
        .robustness
        .iter()
        .filter(|r| r.protocol == "testbed")
        .collect();
    assert_eq!(testbed.len(), 1);
    // Among the 125 mapped classes only 409, 530, 606, 783, 728 and 487 are active: 783/k1
    // (placed at class 6, outside the sublist) is predicted 728, its nearest mapped neighbour
    // on the circle (a miss), with 783 four steps away inside the top 5.
    let t = testbed[0];
    assert_eq!((t.dataset.as_str(), t.images), ("objectnet", 6));
    assert!(close(t.top1, pct(5)) && close(t.top5, pct(6)), "{t:?}");
    for (dataset, [p1, p5, o1, o5]) in expected {
        for (protocol, t1, t5) in [("paper", p1, p5), ("official", o1, o5)] {
            let r = s
                .robustness
                .iter()
                .find(|r| r.dataset == dataset && r.protocol == protocol)
                .unwrap_or_else(|| panic!("no row for {dataset} {protocol}"));
            assert_eq!(r.images, 6, "{dataset} {protocol}");
            assert!(
                close(r.top1, pct(t1)) && close(r.top5, pct(t5)),
                "{dataset} {protocol}: top-1 {} top-5 {}, expected {} {}",
                r.top1,
                r.top5,
                pct(t1),
                pct(t5)
            );
            assert!(close(r.top1_err, 100.0 - pct(t1)));
            assert_eq!(r.model, "tiny");
            assert_eq!(r.checkpoint, model_dir.to_str().unwrap());
            assert_eq!(r.checkpoint_sha256.len(), 12);
        }
    }

    // Segmentation: one patch gives a constant (degenerate, NaN) map for every explainer, so
    // every pixel is predicted background: 384 of 512 pixels right, IoU_bg = 384/512,
    // IoU_fg = 0, AP = 0.5 per image, no relevance mass, and the constant maximum lies on the
    // object of the one image that has one.
    assert_eq!(s.segmentation.len(), 4);
    for r in &s.segmentation {
        assert_eq!((r.dataset.as_str(), r.images), ("imagenet-seg", 2));
        assert!(close(r.pixel_acc, 75.0), "{r:?}");
        assert!(close(r.miou, 37.5), "{r:?}");
        assert!(close(r.map, 50.0), "{r:?}");
        assert!(close(r.mass_acc, 0.0), "{r:?}");
        assert!(close(r.pointing, 100.0), "{r:?}");
    }
    let explainers: Vec<&str> = s
        .segmentation
        .iter()
        .map(|r| r.explainer.as_str())
        .collect();
    assert_eq!(
        explainers,
        ["relevance", "raw-attention", "rollout", "grad-cam"]
    );

    let read = |n: &str| std::fs::read_to_string(out.join(n)).unwrap();
    let rob1 = read("robustness.csv");
    let seg1 = read("segmentation.csv");
    let md1 = read("paper_table.md");
    let csv1 = read("paper_table.csv");
    let chart1 = std::fs::read(out.join("chart_tiny_paper.png")).unwrap();
    assert_eq!(rob1.lines().count(), 20);
    assert!(
        rob1.contains(",imagenet-a,official,6,66.667,100.000,33.333,0.000,"),
        "{rob1}"
    );
    assert!(md1.contains("| tiny |  |"), "{md1}");
    assert!(
        csv1.contains(",objectnet,paper,,top1,6,66.667,n/a,,n/a,"),
        "{csv1}"
    );
    assert!(out.join("chart_tiny_official.png").is_file());

    // Re-running replaces the rows: same bytes apart from the date and throughput columns.
    let s2 = run(&args);
    assert_eq!(s2.robustness.len(), 19);
    let drop = ["date", "images_per_s"];
    assert_eq!(
        without_run_columns(&read("robustness.csv"), &drop),
        without_run_columns(&rob1, &drop)
    );
    assert_eq!(
        without_run_columns(&read("segmentation.csv"), &drop),
        without_run_columns(&seg1, &drop)
    );
    assert_eq!(read("paper_table.md"), md1);
    assert_eq!(read("paper_table.csv"), csv1);
    assert_eq!(
        std::fs::read(out.join("chart_tiny_paper.png")).unwrap(),
        chart1
    );
}

/// `--predictions`: every ObjectNet image's top 5 with softmax scores, paths relative to the
/// dataset root, and the accepted classes as the label.
#[test]
fn predictions_file_lists_each_images_top_five() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("data");
    let model_dir = d.path().join("runs/tiny");
    let file = d.path().join("pred/objectnet.csv");
    write_data(&root);
    write_model(&model_dir, &POSITIONS);
    let s = run(&[
        "--suite",
        "objectnet",
        "--protocol",
        "all",
        "--checkpoint",
        model_dir.to_str().unwrap(),
        "--data-root",
        root.to_str().unwrap(),
        "--out",
        d.path().join("results").to_str().unwrap(),
        "--device",
        "cpu",
        "--predictions",
        file.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(s.robustness.len(), 3);
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], evaluate::predictions::HEADER);
    // 6 images x 5 ranks for each preprocessing: paper, official, testbed (border crop).
    assert_eq!(lines.len(), 1 + 3 * 6 * 5);
    for group in ["paper", "official", "testbed"] {
        let n = lines
            .iter()
            .filter(|l| l.contains(&format!(",objectnet,{group},")))
            .count();
        assert_eq!(n, 30, "{group}");
    }
    // The alarm clock's second image sits at class 530: first with the highest score, the
    // label lists both mapped classes, the path is relative to objectnet-1.0/images.
    let alarm: Vec<Vec<&str>> = lines
        .iter()
        .filter(|l| l.contains(",official,alarm_clock/") && l.contains("_001."))
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(alarm.len(), 5);
    assert_eq!(alarm[0][5], "409;530");
    assert_eq!((alarm[0][6], alarm[0][7]), ("1", "530"));
    assert_eq!(alarm[0][8], data::labels::imagenet_wnids()[530]);
    let scores: Vec<f64> = alarm
        .iter()
        .map(|f| f.last().unwrap().parse().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(
        scores[0] > 0.0 && scores.iter().sum::<f64>() <= 1.0 + 1e-5,
        "{scores:?}"
    );
    // The neighbours on the circle come next (positions 3 and 5: classes 409 and 606).
    let next: Vec<&str> = alarm[1..3].iter().map(|f| f[7]).collect();
    assert!(next.contains(&"409") && next.contains(&"606"), "{next:?}");
}
