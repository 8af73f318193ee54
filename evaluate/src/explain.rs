//! `explain`: relevance maps of your own images with your own checkpoints, as pictures.
//!
//! For each image one PNG: the input as the model sees it (after the model's evaluation
//! preprocessing), then for each checkpoint the relevance overlay titled with that
//! checkpoint's top prediction, one row per method, and a colour bar. With the original
//! weights and a fine-tuned checkpoint it is the paper's before/after picture. Beside each PNG
//! a JSON file holds the raw maps and where each panel lies in the PNG, so the picture can be
//! checked against the library (`relevance::explain`).

// The fields' doc comments are also the `--help` text, written for a terminal: `<wnid>`,
// `id[@revision]` are placeholders there, not HTML or intra-doc links.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use clap::Parser;
use figures::{ColorMap, Panel, Row, Sheet};
use relevance::Explainer;
use serde::{Deserialize, Serialize};

use crate::cli::{EvalArgs, ProtocolChoice};
use crate::plan;

const AFTER_HELP: &str = "\
Examples:
  explain cat.jpg --model augreg-base --checkpoint pretrained --checkpoint runs/augreg-base/best.safetensors
  explain photos/ --model vit-base --method all --class 'tabby cat' --out pictures --contact-sheet pictures/all.png
  explain img.png --checkpoint runs/demo/rel-finetuned/last.safetensors --colormap jet

--class takes an index (281), a wnid (n02123045) or an ImageNet class name (tabby cat, or
any of its synonyms). A model with fewer classes (e.g. a demo model trained on the first
ImageNet classes) uses the same indices and names.

Writes OUT/<image stem>.png and OUT/<image stem>.json (raw maps in [0, 1], row-major, with
each panel's rectangle in the PNG). A missing or unreadable image is named on stderr and
skipped; the exit status is non-zero only when no image could be explained.";

/// `explain`'s command line; `explain --help` documents each field.
#[derive(Debug, Clone, PartialEq, Parser)]
#[command(
    name = "explain",
    about = "Relevance maps of your own images: one PNG per image with the input, each checkpoint's overlay and prediction, and a colour bar",
    after_help = AFTER_HELP,
    version = report::version(env!("CARGO_PKG_VERSION"))
)]
pub struct ExplainArgs {
    /// Image files (.jpg, .jpeg, .png) or folders of them (not recursive, sorted by name).
    #[arg(required = true, value_name = "IMAGE_OR_FOLDER")]
    pub inputs: Vec<PathBuf>,
    /// Model name (vit-base, vit-large, augreg-small, augreg-base, augreg-large, deit-small,
    /// deit-base or an alias); without it the architecture comes from each checkpoint's
    /// config.json.
    #[arg(long)]
    pub model: Option<String>,
    /// Weights, one overlay column each, in order: a .safetensors file, a folder with
    /// model.safetensors (+ config.json), a hub id[@revision], or `pretrained` for the
    /// model's original weights. Repeat for before/after. Without it, the original weights.
    #[arg(long)]
    pub checkpoint: Vec<String>,
    /// Class to explain: an index, a wnid or an ImageNet class name. Default: each
    /// checkpoint's top prediction.
    #[arg(long)]
    pub class: Option<String>,
    /// Explanation method: relevance (the paper's), rollout, grad-cam, raw-attention
    /// (last-layer attention), or all (one row each). Comma separated for several.
    #[arg(long, default_value = "relevance", value_delimiter = ',')]
    pub method: Vec<String>,
    /// Colour map of the overlays: viridis (perceptually uniform) or jet (the reference
    /// code's).
    #[arg(long, default_value = "viridis", value_parser = parse_colormap)]
    pub colormap: ColorMap,
    /// Preprocessing: official (the model's own evaluation transform) or paper (RobustViT's:
    /// resize, centre crop, mean = std = 0.5).
    #[arg(long, default_value = "official", value_parser = parse_protocol)]
    pub protocol: data::Protocol,
    /// Output folder of the pictures and raw maps.
    #[arg(long, default_value = "explain")]
    pub out: PathBuf,
    /// Also write one contact sheet PNG of every image (input and overlays of the first
    /// method) to FILE.
    #[arg(long, value_name = "FILE")]
    pub contact_sheet: Option<PathBuf>,
    /// cpu, cuda or auto (the GPU when built with --features cuda and one is present).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

fn parse_colormap(s: &str) -> Result<ColorMap, String> {
    s.parse().map_err(|e: figures::FigureError| e.to_string())
}

fn parse_protocol(s: &str) -> Result<data::Protocol, String> {
    match s {
        "paper" => Ok(data::Protocol::Paper),
        "official" => Ok(data::Protocol::Official),
        _ => Err(format!("unknown protocol `{s}`; known: official, paper")),
    }
}

impl ExplainArgs {
    /// The methods asked for, in the order given (`all`: every method).
    pub fn methods(&self) -> Result<Vec<Explainer>> {
        let mut out = Vec::new();
        for m in &self.method {
            if m == "all" {
                out.extend(Explainer::ALL);
            } else {
                out.push(m.parse::<Explainer>()?);
            }
        }
        // Each method once, first mention first (`rollout,all` draws rollout once).
        let mut seen = Vec::new();
        out.retain(|e| {
            let new = !seen.contains(e);
            seen.push(*e);
            new
        });
        if out.is_empty() {
            bail!("--method is empty");
        }
        Ok(out)
    }
}

/// A class given by index, wnid or ImageNet name, checked against the model's class count.
pub fn parse_class(s: &str, num_classes: usize) -> Result<u32> {
    let s = s.trim();
    let index = if let Ok(i) = s.parse::<usize>() {
        i
    } else if let Some(i) = data::labels::wnid_to_index(s) {
        i
    } else {
        let names = data::labels::imagenet_class_names();
        let want = s.to_lowercase();
        let matches = |n: &String| n.split(',').any(|syn| syn.trim().to_lowercase() == want);
        match names.iter().position(matches) {
            Some(i) => i,
            None => {
                let near: Vec<&str> = names
                    .iter()
                    .filter(|n| n.to_lowercase().contains(&want))
                    .map(|n| n.as_str())
                    .take(5)
                    .collect();
                if near.is_empty() {
                    bail!("--class {s}: not an index, a wnid or an ImageNet class name");
                }
                bail!(
                    "--class {s}: not an ImageNet class name; did you mean one of: {}?",
                    near.join("; ")
                );
            }
        }
    };
    if index >= num_classes {
        bail!("--class {s} is class {index}, but the model has {num_classes} classes");
    }
    Ok(index as u32)
}

/// The image files named by `inputs`: files as given, folders' images sorted by name.
/// Missing paths are returned too, so that they are named and skipped like unreadable files.
pub fn image_files(inputs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map(|rd| {
                    rd.filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|f| f.is_file() && data::check::has_image_extension(f))
                        .collect()
                })
                .unwrap_or_default();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    out
}

/// One loaded checkpoint.
struct Loaded {
    label: String,
    vit: model::Vit,
    transform: data::EvalTransform,
    /// The class `--class` names in this model's label space (None: its top prediction).
    target: Option<u32>,
}

/// A model's prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub class: u32,
    pub name: String,
    pub probability: f32,
}

/// Where a panel lies in the PNG, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PanelRect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl From<figures::Rect> for PanelRect {
    fn from(r: figures::Rect) -> Self {
        Self {
            x: r.x,
            y: r.y,
            w: r.w,
            h: r.h,
        }
    }
}

/// One overlay of the picture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapRecord {
    pub checkpoint: String,
    pub method: String,
    /// The class the map explains.
    pub class: u32,
    pub prediction: Prediction,
    /// Row-major `height·width` values in [0, 1].
    pub map: Vec<f32>,
    pub rect: PanelRect,
}

/// The JSON written beside each picture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplainRecord {
    pub image: PathBuf,
    pub png: PathBuf,
    pub width: u32,
    pub height: u32,
    pub colormap: String,
    /// The input panel of each row (the preprocessed image).
    pub inputs: Vec<PanelRect>,
    pub maps: Vec<MapRecord>,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExplainSummary {
    pub written: Vec<PathBuf>,
    pub skipped: Vec<(PathBuf, String)>,
}

fn top1(logits: &Tensor) -> Result<Prediction> {
    let z = logits
        .to_device(&Device::Cpu)?
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let class = data::ranking::top_k(&z, 1, None)[0];
    let sum: f32 = z.iter().map(|v| (v - z[class]).exp()).sum();
    Ok(Prediction {
        class: class as u32,
        name: data::labels::imagenet_short_name(class as u32),
        probability: 1.0 / sum,
    })
}

fn unique_stem(path: &Path, used: &mut std::collections::BTreeSet<String>) -> String {
    let base = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let mut stem = base.clone();
    let mut k = 2;
    while !used.insert(stem.clone()) {
        stem = format!("{base}_{k}");
        k += 1;
    }
    stem
}

struct Explained {
    /// The image as each checkpoint sees it (the first one is the input panel).
    seen: Vec<image::RgbImage>,
    /// Per method, per checkpoint: prediction, explained class, map.
    maps: Vec<Vec<(Prediction, u32, Vec<f32>)>>,
}

fn explain_one(path: &Path, models: &[Loaded], methods: &[Explainer]) -> Result<Explained> {
    let img = data::preprocess::decode_rgb(path)?;
    let mut seen = Vec::new();
    let mut maps = vec![Vec::new(); methods.len()];
    for m in models {
        let size = m.vit.config().img_size;
        let view = m.transform.apply_u8(&img);
        let chw = data::preprocess::to_chw(&view, &m.transform.norm);
        let x = Tensor::from_vec(chw, (1, 3, size, size), m.vit.device())?;
        let targets = m.target.map(|t| vec![t]);
        for (mi, &e) in methods.iter().enumerate() {
            let r = relevance::explain(&m.vit, &x, e, targets.as_deref())?;
            let pred = top1(&r.logits)?;
            let map = relevance::render::map_values(&r.map)?;
            maps[mi].push((pred, r.targets[0], map));
        }
        seen.push(view);
    }
    Ok(Explained { seen, maps })
}

/// Panels of one image: per method a row with the input, then each checkpoint's overlay.
fn rows_for(
    e: &Explained,
    models: &[Loaded],
    methods: &[Explainer],
    cmap: ColorMap,
    with_label: bool,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let (w, h) = e.seen[0].dimensions();
    for (mi, method) in methods.iter().enumerate() {
        let mut panels = vec![Panel {
            title: vec!["input".into(), format!("{w}×{h} px")],
            image: e.seen[0].clone(),
        }];
        for (k, (m, (pred, target, map))) in models.iter().zip(&e.maps[mi]).enumerate() {
            let mut title = vec![
                m.label.clone(),
                format!("{} {:.1}%", pred.name, 100.0 * pred.probability),
            ];
            if *target != pred.class && method.is_class_specific() {
                title.push(format!(
                    "map of: {}",
                    data::labels::imagenet_short_name(*target)
                ));
            }
            panels.push(Panel {
                title,
                image: figures::heatmap_overlay(&e.seen[k], map, cmap)?,
            });
        }
        rows.push(Row {
            label: with_label.then(|| method.name().to_owned()),
            panels,
        });
    }
    Ok(rows)
}

fn colour_bar(cmap: ColorMap) -> figures::ColorBar {
    figures::ColorBar {
        cmap,
        label: "relevance".into(),
    }
}

fn caption(cmap: ColorMap, protocol: data::Protocol) -> Vec<String> {
    format!(
        "Input: the image as the model sees it ({} preprocessing). Overlays: the map in {cmap} \
         (min–max normalised per image; 1 = most relevant) added to the input. Titles: \
         checkpoint, then its top prediction and probability.",
        protocol.name()
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

fn load_models(args: &ExplainArgs, device: &Device) -> Result<Vec<Loaded>> {
    let eval = EvalArgs {
        model: args.model.iter().cloned().collect(),
        checkpoint: args.checkpoint.clone(),
        protocol: ProtocolChoice::Paper,
        ..EvalArgs::default()
    };
    let specs = eval.model_specs().map_err(anyhow::Error::msg)?;
    let hub = model::HubOptions::from_env();
    let mut out = Vec::new();
    for spec in specs {
        let loaded = crate::evaluation::load_spec(&spec, &hub, device)?;
        let label = match &spec.checkpoint {
            None => "pretrained".to_owned(),
            Some(c) => plan::label_from_checkpoint(c),
        };
        let size = loaded.vit.config().img_size as u32;
        let transform = plan::transform(
            Some(data::Benchmark::ImageNetVal),
            args.protocol,
            size,
            &loaded.pretrained,
        )?;
        report::note(format!(
            "{label}: {} classes, input {size}×{size}, weights {}",
            loaded.vit.config().num_classes,
            loaded.weights_path.display()
        ));
        // A bad --class is the same for every image: it fails here, before the first one.
        let target = args
            .class
            .as_deref()
            .map(|c| parse_class(c, loaded.vit.config().num_classes))
            .transpose()?;
        out.push(Loaded {
            label,
            vit: loaded.vit,
            transform,
            target,
        });
    }
    Ok(out)
}

/// Explains every image of `args`; errors only when nothing could be explained (or the
/// models cannot be loaded).
pub fn run(args: &ExplainArgs) -> Result<ExplainSummary> {
    let methods = args.methods()?;
    let (device, line) = model::select_device(&args.device)?;
    report::note(format!("device: {line}"));
    let models = load_models(args, &device)?;
    let files = image_files(&args.inputs);
    if files.is_empty() {
        bail!("no image found in {:?}", args.inputs);
    }
    let mut summary = ExplainSummary::default();
    let mut used = std::collections::BTreeSet::new();
    let mut contact = Vec::new();
    for path in &files {
        let explained = match explain_one(path, &models, &methods) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("skipped {}: {e:#}", path.display());
                summary.skipped.push((path.clone(), format!("{e:#}")));
                continue;
            }
        };
        let stem = unique_stem(path, &mut used);
        let png = args.out.join(format!("{stem}.png"));
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let explaining = match &args.class {
            Some(c) => format!("class {c}"),
            None => "each checkpoint's top prediction".into(),
        };
        let (w, h) = explained.seen[0].dimensions();
        let sheet = Sheet {
            title: Some(format!("{name}: explaining {explaining}")),
            rows: rows_for(
                &explained,
                &models,
                &methods,
                args.colormap,
                methods.len() > 1,
            )?,
            colour_bar: Some(colour_bar(args.colormap)),
            caption: caption(args.colormap, args.protocol),
            panel_size: figures::sheet::panel_side(w.max(h), 224),
        };
        let layout = sheet.layout()?;
        let img = sheet.render()?;
        figures::save_png(&img, &png)?;
        let mut maps = Vec::new();
        for (mi, method) in methods.iter().enumerate() {
            for (k, (m, (pred, target, map))) in models.iter().zip(&explained.maps[mi]).enumerate()
            {
                maps.push(MapRecord {
                    checkpoint: m.label.clone(),
                    method: method.name().to_owned(),
                    class: *target,
                    prediction: pred.clone(),
                    map: map.clone(),
                    rect: layout.panels[mi][k + 1].into(),
                });
            }
        }
        let record = ExplainRecord {
            image: path.clone(),
            png: png.clone(),
            width: layout.width,
            height: layout.height,
            colormap: args.colormap.name().to_owned(),
            inputs: layout.panels.iter().map(|r| r[0].into()).collect(),
            maps,
        };
        let json = args.out.join(format!("{stem}.json"));
        crate::results::write_atomic(&json, serde_json::to_string(&record)?.as_bytes())?;
        println!("{}", png.display());
        summary.written.push(png);
        if args.contact_sheet.is_some() {
            let mut row =
                rows_for(&explained, &models, &methods[..1], args.colormap, false)?.remove(0);
            row.label = Some(name);
            contact.push(row);
        }
    }
    if let (Some(file), false) = (&args.contact_sheet, contact.is_empty()) {
        let side = contact[0].panels[0].image.width();
        let sheet = Sheet {
            title: Some(format!(
                "{} image(s), method {}",
                contact.len(),
                methods[0].name()
            )),
            rows: contact,
            colour_bar: Some(colour_bar(args.colormap)),
            caption: caption(args.colormap, args.protocol),
            panel_size: figures::sheet::panel_side(side, 160),
        };
        figures::save_png(&sheet.render()?, file)?;
        println!("{}", file.display());
        summary.written.push(file.clone());
    }
    if summary.written.is_empty() {
        bail!(
            "no image could be explained ({} skipped)",
            summary.skipped.len()
        );
    }
    if !summary.skipped.is_empty() {
        report::note(format!(
            "{} image(s) skipped (named above)",
            summary.skipped.len()
        ));
    }
    Ok(summary)
}
