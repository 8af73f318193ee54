//! `explain` on the tiny fixture ViT (32×32, 10 classes) over generated images: one PNG per
//! image with the expected size and panels, the drawn overlay equal to the library's map,
//! `--class` by index, wnid and name, missing and corrupt images named and skipped.

use std::path::Path;
use std::process::Command;

use candle_core::{Device, Tensor};
use clap::Parser;
use evaluate::explain::{run, ExplainArgs, ExplainRecord};
use figures::ColorMap;
use image::{Rgb, RgbImage};

fn fixture() -> String {
    model::fixture_dir().display().to_string()
}

/// A 48×40 picture with a bright square in one corner: an off-square size, so the model's
/// preprocessing (resize + centre crop) does something.
fn write_image(path: &Path, seed: u32) {
    let img = RgbImage::from_fn(48, 40, |x, y| {
        if x < 20 && y < 20 {
            Rgb([250, 240, (seed * 40) as u8])
        } else {
            Rgb([(x * 5) as u8, (y * 6) as u8, (seed * 70 % 255) as u8])
        }
    });
    img.save(path).unwrap();
}

fn args(extra: &[&str]) -> ExplainArgs {
    let mut v = vec!["explain"];
    v.extend_from_slice(extra);
    ExplainArgs::parse_from(v)
}

fn record(dir: &Path, stem: &str) -> ExplainRecord {
    serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{stem}.json"))).unwrap())
        .unwrap()
}

/// The library's map of `image` for the fixture model, as `explain` preprocesses it.
fn library_map(
    image: &Path,
    method: relevance::Explainer,
    class: Option<u32>,
) -> (RgbImage, Vec<f32>) {
    let m = model::load_fixture_model(&model::fixture_dir(), &Device::Cpu).unwrap();
    let t = evaluate::plan::transform(
        Some(data::Benchmark::ImageNetVal),
        data::Protocol::Official,
        32,
        &m.pretrained,
    )
    .unwrap();
    let view = t.apply_u8(&data::preprocess::decode_rgb(image).unwrap());
    let chw = data::preprocess::to_chw(&view, &t.norm);
    let x = Tensor::from_vec(chw, (1, 3, 32, 32), &Device::Cpu).unwrap();
    let targets = class.map(|c| vec![c]);
    let r = relevance::explain(&m.vit, &x, method, targets.as_deref()).unwrap();
    (view, relevance::render::map_values(&r.map).unwrap())
}

/// The overlay panel of `rect` in the PNG, sampled back at one pixel per model pixel.
fn read_back(png: &RgbImage, rect: &evaluate::explain::PanelRect, side: u32) -> RgbImage {
    let k = rect.w / side;
    assert_eq!(rect.w, k * side, "panels are whole multiples of the input");
    RgbImage::from_fn(side, side, |x, y| {
        *png.get_pixel(rect.x + k * x + k / 2, rect.y + k * y + k / 2)
    })
}

#[test]
fn one_png_per_image_with_the_library_maps_drawn() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.png"), dir.path().join("b.png"));
    write_image(&a, 1);
    write_image(&b, 2);
    let out = dir.path().join("out");
    let f = fixture();
    let s = run(&args(&[
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--checkpoint",
        &f,
        "--checkpoint",
        &f,
        "--out",
        out.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(s.written, vec![out.join("a.png"), out.join("b.png")]);
    assert!(s.skipped.is_empty());
    for (img, stem) in [(&a, "a"), (&b, "b")] {
        let rec = record(&out, stem);
        let png = image::open(out.join(format!("{stem}.png")))
            .unwrap()
            .to_rgb8();
        assert_eq!(png.dimensions(), (rec.width, rec.height));
        // One row (one method): the input and one overlay per checkpoint.
        assert_eq!(rec.inputs.len(), 1);
        assert_eq!(rec.maps.len(), 2);
        let (view, want) = library_map(img, relevance::Explainer::Relevance, None);
        // The input panel is the image as the model sees it.
        assert_eq!(read_back(&png, &rec.inputs[0], 32), view);
        for m in &rec.maps {
            assert_eq!(m.method, "relevance");
            assert_eq!(m.map.len(), 32 * 32);
            for (g, w) in m.map.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "{g} vs {w}");
            }
            // The overlay drawn is the saved map over the input, in viridis.
            let drawn = read_back(&png, &m.rect, 32);
            assert_eq!(
                drawn,
                figures::heatmap_overlay(&view, &m.map, ColorMap::Viridis).unwrap()
            );
            // Panels do not overlap the input panel.
            assert!(m.rect.x >= rec.inputs[0].x + rec.inputs[0].w);
        }
        assert_eq!(rec.maps[0].rect.y, rec.maps[1].rect.y);
        assert!(rec.maps[1].rect.x > rec.maps[0].rect.x + rec.maps[0].rect.w);
    }
}

#[test]
fn all_methods_give_one_row_each_and_a_contact_sheet() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    for k in 0..3 {
        write_image(&imgs.join(format!("img{k}.png")), k);
    }
    std::fs::write(imgs.join("notes.txt"), "not an image").unwrap();
    let out = dir.path().join("out");
    let sheet = dir.path().join("sheet.png");
    let f = fixture();
    let s = run(&args(&[
        imgs.to_str().unwrap(),
        "--checkpoint",
        &f,
        "--method",
        "all",
        "--colormap",
        "jet",
        "--out",
        out.to_str().unwrap(),
        "--contact-sheet",
        sheet.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(s.written.len(), 4, "{:?}", s.written);
    let rec = record(&out, "img1");
    assert_eq!(rec.inputs.len(), 4);
    let methods: Vec<&str> = rec.maps.iter().map(|m| m.method.as_str()).collect();
    assert_eq!(
        methods,
        ["relevance", "raw-attention", "rollout", "grad-cam"]
    );
    let png = image::open(out.join("img1.png")).unwrap().to_rgb8();
    for m in &rec.maps {
        let e: relevance::Explainer = m.method.parse().unwrap();
        let (view, want) = library_map(&imgs.join("img1.png"), e, None);
        for (g, w) in m.map.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{}: {g} vs {w}", m.method);
        }
        let drawn = read_back(&png, &m.rect, 32);
        assert_eq!(
            drawn,
            figures::heatmap_overlay(&view, &m.map, ColorMap::Jet).unwrap()
        );
    }
    // Rows stack downwards.
    for w in rec.inputs.windows(2) {
        assert!(w[1].y > w[0].y + w[0].h);
    }
    let c = image::open(&sheet).unwrap().to_rgb8();
    assert!(
        c.height() > 3 * 128 && c.width() > 2 * 128,
        "{:?}",
        c.dimensions()
    );
}

#[test]
fn class_by_index_wnid_and_name_is_the_same_class() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.png");
    write_image(&a, 3);
    let f = fixture();
    let mut maps = Vec::new();
    for (k, class) in ["1", "n01443537", "goldfish", "Carassius auratus"]
        .iter()
        .enumerate()
    {
        let out = dir.path().join(format!("out{k}"));
        run(&args(&[
            a.to_str().unwrap(),
            "--checkpoint",
            &f,
            "--class",
            class,
            "--out",
            out.to_str().unwrap(),
        ]))
        .unwrap();
        let rec = record(&out, "a");
        assert_eq!(rec.maps[0].class, 1, "--class {class}");
        maps.push(rec.maps[0].map.clone());
    }
    assert!(maps.windows(2).all(|w| w[0] == w[1]));
    let (_, want) = library_map(&a, relevance::Explainer::Relevance, Some(1));
    for (g, w) in maps[0].iter().zip(&want) {
        assert!((g - w).abs() < 1e-5);
    }
    // Unknown names and classes beyond the model's 10 are refused, not skipped.
    for bad in ["no such class", "tabby cat", "12"] {
        let err = run(&args(&[
            a.to_str().unwrap(),
            "--checkpoint",
            &f,
            "--class",
            bad,
            "--out",
            dir.path().join("bad").to_str().unwrap(),
        ]))
        .unwrap_err();
        assert!(format!("{err:#}").contains("--class"), "{err:#}");
    }
}

/// The `explain` binary on `images` with the fixture checkpoint, writing into `out`.
fn explain_bin(images: &[&Path], out: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_explain"))
        .args(images)
        .arg("--checkpoint")
        .arg(fixture())
        .arg("--out")
        .arg(out)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap()
}

#[test]
fn missing_and_corrupt_images_are_named_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.png");
    write_image(&good, 4);
    let corrupt = dir.path().join("corrupt.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let missing = dir.path().join("missing.jpg");
    let out = dir.path().join("out");
    let o = explain_bin(&[&good, &missing, &corrupt], &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&format!("skipped {}", missing.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!("skipped {}", corrupt.display())),
        "{err}"
    );
    assert!(err.contains("2 image(s) skipped"), "{err}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [out.join("good.png").display().to_string()]
    );
    let mut written: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written, ["good.json", "good.png"]);

    // Nothing explainable: a failure that says so.
    let o = explain_bin(&[&missing, &corrupt], &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("no image could be explained (2 skipped)"),
        "{err}"
    );
}

#[test]
fn each_method_is_drawn_once_in_the_order_first_named() {
    use relevance::Explainer::*;
    let m = |s: &str| args(&["x.png", "--method", s]).methods().unwrap();
    assert_eq!(
        m("rollout,all"),
        [Rollout, Relevance, RawAttention, GradCam]
    );
    assert_eq!(m("grad-cam,relevance,grad-cam"), [GradCam, Relevance]);
    assert_eq!(m("all").len(), 4);
}
