//! `--check` decodes every image (`--check-quick` only lists them), and output problems are
//! found before the first image is evaluated.

mod common;

use common::{write_model_with, write_solid, POSITIONS};
use std::path::Path;

fn args(model: &Path, out: &Path, extra: &[&str]) -> evaluate::EvalArgs {
    let mut a: Vec<String> = [
        "evaluate",
        "--checkpoint",
        model.to_str().unwrap(),
        "--data-root",
        model.join("nothing").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    <evaluate::EvalArgs as clap::Parser>::try_parse_from(a).unwrap()
}

fn truncated_jpeg(path: &Path) {
    let img = image::RgbImage::from_pixel(16, 16, image::Rgb([200, 30, 30]));
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn check_decodes_every_image_unless_quick() {
    let d = tempfile::tempdir().unwrap();
    let bench = d.path().join("bench");
    write_solid(&bench.join("n01440764/a.png"), 16, 16, 0);
    write_solid(&bench.join("n01443537/a.png"), 16, 16, 1);
    let bad = bench.join("n01443537/b.JPEG");
    truncated_jpeg(&bad);
    let model = d.path().join("m");
    write_model_with(&model, &POSITIONS, "bilinear");
    let out = d.path().join("out");
    let folder = format!("bench={}", bench.display());
    let e = evaluate::run(&args(&model, &out, &["--folder", &folder, "--check"])).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains(bad.to_str().unwrap()), "{msg}");
    assert!(msg.contains("1 of 3"), "{msg}");
    let s = evaluate::run(&args(
        &model,
        &out,
        &["--folder", &folder, "--check", "--check-quick"],
    ))
    .unwrap();
    assert_eq!(s.planned[0].images, 3);
    assert!(!out.exists(), "--check writes nothing");
}

#[test]
fn output_problems_stop_the_run_before_any_image() {
    let d = tempfile::tempdir().unwrap();
    let bench = d.path().join("bench");
    write_solid(&bench.join("n01440764/a.png"), 16, 16, 0);
    let masks = d.path().join("masks/n01440764/a.png");
    std::fs::create_dir_all(masks.parent().unwrap()).unwrap();
    data::synthetic::imagenet_s_mask(16, 16, &[1])
        .save(&masks)
        .unwrap();
    let model = d.path().join("m");
    write_model_with(&model, &POSITIONS, "bilinear");
    let folder = format!("bench={}", bench.display());
    let seg = format!(
        "bench-seg={}:{}",
        bench.display(),
        d.path().join("masks").display()
    );

    // --out is a file.
    let file = d.path().join("out-file");
    std::fs::write(&file, "x").unwrap();
    let e = evaluate::run(&args(&model, &file, &["--folder", &folder])).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("--out") && msg.contains(file.to_str().unwrap()),
        "{msg}"
    );

    // An unreadable segmentation table: refused before the classification rows are written.
    let out = d.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("segmentation.csv"), "garbage,\"\n1,2,3\n").unwrap();
    let e = evaluate::run(&args(
        &model,
        &out,
        &[
            "--folder",
            &folder,
            "--seg-folder",
            &seg,
            "--explainer",
            "relevance",
        ],
    ))
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("segmentation.csv"), "{msg}");
    assert!(!out.join("robustness.csv").exists(), "{msg}");
}
