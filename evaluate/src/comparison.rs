//! The comparison with published numbers (`paper_table.md` / `.csv`) and the bar charts.
//!
//! The published numbers are data (`evaluate/settings/paper_results.csv`, built into the
//! binary) so that a number recovered later is one line to add. Both outputs are rebuilt from
//! the whole merged result tables, hold no date, and are sorted, so re-running an evaluation
//! rewrites the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use data::Benchmark;
use serde::Deserialize;
use thiserror::Error;

use crate::results::{RobustnessRow, SegmentationRow};
use figures::chart::{BarChart, BarGroup};

/// The built-in copy of `evaluate/settings/paper_results.csv`.
pub const BUILTIN_PAPER_RESULTS: &str = include_str!("../settings/paper_results.csv");

/// Dataset name of ImageNet-Segmentation (`gtsegs_ijcv.mat`) in the result tables.
pub const IMAGENET_SEG: &str = "imagenet-seg";

/// Why the published numbers could not be read.
#[derive(Debug, Error)]
pub enum PaperError {
    #[error("{origin}: {source}; fix the file (one header line `model,state,dataset,protocol,metric,value,value_max,reference,source`, `#` comments)")]
    Parse { origin: String, source: csv::Error },
    #[error("{origin}: {what}")]
    Invalid { origin: String, what: String },
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Deserialize)]
struct Line {
    model: String,
    state: String,
    dataset: String,
    protocol: String,
    metric: String,
    value: f64,
    /// Upper end of a range (several seeds); empty for a single figure.
    value_max: Option<f64>,
    reference: String,
    source: String,
}

/// Lookup key of a published number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PaperKey {
    pub model: String,
    /// `original` or `finetuned`.
    pub state: String,
    pub dataset: String,
    pub protocol: String,
    pub metric: String,
    /// `paper`, `timm` or `reproduction` (a third party's run of the official code).
    pub reference: String,
}

/// A published figure: one number, or the range over several seeds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figure {
    pub min: f64,
    pub max: f64,
}

/// Published numbers with their sources.
#[derive(Debug, Clone, Default)]
pub struct PaperResults {
    values: BTreeMap<PaperKey, (Figure, String)>,
}

impl PaperResults {
    /// Parses the CSV text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, PaperError> {
        let mut r = csv::ReaderBuilder::new()
            .comment(Some(b'#'))
            .from_reader(text.as_bytes());
        let mut values = BTreeMap::new();
        for (i, line) in r.deserialize::<Line>().enumerate() {
            let l = line.map_err(|source| PaperError::Parse {
                origin: origin.to_owned(),
                source,
            })?;
            let bad = |what: String| PaperError::Invalid {
                origin: origin.to_owned(),
                what: format!("record {}: {what}", i + 1),
            };
            if !is_paper_model(&l.model) {
                return Err(bad(format!(
                    "model `{}` is not a canonical model name",
                    l.model
                )));
            }
            if !["original", "finetuned"].contains(&l.state.as_str()) {
                return Err(bad(format!(
                    "state `{}` is neither original nor finetuned",
                    l.state
                )));
            }
            if !["paper", "official", "testbed"].contains(&l.protocol.as_str()) {
                return Err(bad(format!("protocol `{}`", l.protocol)));
            }
            if !["paper", "timm", "reproduction"].contains(&l.reference.as_str()) {
                return Err(bad(format!("reference `{}`", l.reference)));
            }
            if l.dataset != IMAGENET_SEG && Benchmark::from_name(&l.dataset).is_err() {
                return Err(bad(format!("unknown dataset `{}`", l.dataset)));
            }
            let key = PaperKey {
                model: l.model,
                state: l.state,
                dataset: l.dataset,
                protocol: l.protocol,
                metric: l.metric,
                reference: l.reference,
            };
            let max = l.value_max.unwrap_or(l.value);
            if !(l.value.is_finite() && max.is_finite() && max >= l.value) {
                return Err(bad(format!(
                    "value {} .. value_max {max} is not a finite range",
                    l.value
                )));
            }
            let fig = Figure { min: l.value, max };
            if values.insert(key.clone(), (fig, l.source)).is_some() {
                return Err(bad(format!("{key:?} is given twice")));
            }
        }
        Ok(Self { values })
    }

    /// The numbers built into the binary.
    pub fn builtin() -> Self {
        Self::parse(BUILTIN_PAPER_RESULTS, "evaluate/settings/paper_results.csv")
            .expect("the built-in paper results are checked by a test")
    }

    /// Reads a file in the same format.
    pub fn load(path: &Path) -> Result<Self, PaperError> {
        let text = std::fs::read_to_string(path).map_err(|source| PaperError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn get(&self, key: &PaperKey) -> Option<(Figure, &str)> {
        self.values.get(key).map(|(v, s)| (*v, s.as_str()))
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// `original` for the hub weights, `finetuned` for any checkpoint.
pub fn state_of(checkpoint: &str) -> &'static str {
    if checkpoint == "pretrained" {
        "original"
    } else {
        "finetuned"
    }
}

/// A comparison cell: a published number, a known gap, or not applicable.
#[derive(Debug, Clone, PartialEq)]
pub enum Ref {
    Value(f64),
    /// A range over seeds; Δ is the distance to the nearer end (0 inside).
    Range(f64, f64),
    /// The comparison applies but the number was not recovered.
    Unknown,
    /// No published number can exist (another protocol, a model or dataset outside the paper).
    NotApplicable,
}

impl Ref {
    fn text(&self, decimals: usize) -> String {
        match self {
            Ref::Value(v) => format!("{v:.decimals$}"),
            Ref::Range(a, b) => format!("{a:.decimals$}–{b:.decimals$}"),
            Ref::Unknown => "unknown".into(),
            Ref::NotApplicable => "n/a".into(),
        }
    }
    fn delta(&self, ours: f64, decimals: usize) -> String {
        match self {
            Ref::Value(v) if ours.is_finite() => format!("{:+.decimals$}", ours - v),
            Ref::Range(a, b) if ours.is_finite() => {
                format!("{:+.decimals$}", ours - ours.clamp(*a, *b))
            }
            _ => String::new(),
        }
    }
}

fn is_paper_model(model: &str) -> bool {
    model::variant(model).is_ok_and(|v| v.name == model)
}

fn is_paper_dataset(dataset: &str) -> bool {
    dataset == IMAGENET_SEG || Benchmark::from_name(dataset).is_ok()
}

/// timm publishes these five sets.
const TIMM_DATASETS: [&str; 5] = [
    "imagenet-val",
    "imagenet-v2",
    "imagenet-sketch",
    "imagenet-a",
    "imagenet-r",
];

struct Lookup<'a> {
    paper: &'a PaperResults,
    used_sources: BTreeSet<String>,
}

impl Lookup<'_> {
    fn find(&mut self, key: PaperKey, applicable: bool) -> Ref {
        if !applicable {
            return Ref::NotApplicable;
        }
        match self.paper.get(&key) {
            Some((v, s)) => {
                self.used_sources.insert(format!("{}: {s}", key.reference));
                if v.min == v.max {
                    Ref::Value(v.min)
                } else {
                    Ref::Range(v.min, v.max)
                }
            }
            None => Ref::Unknown,
        }
    }

    fn paper(
        &mut self,
        model: &str,
        ckpt: &str,
        dataset: &str,
        protocol: &str,
        metric: &str,
    ) -> Ref {
        let applicable = is_paper_model(model) && is_paper_dataset(dataset) && protocol == "paper";
        self.find(
            PaperKey {
                model: model.into(),
                state: state_of(ckpt).into(),
                dataset: dataset.into(),
                protocol: protocol.into(),
                metric: metric.into(),
                reference: "paper".into(),
            },
            applicable,
        )
    }

    /// A third-party reproduction of the paper's finetuning with the official code, scored
    /// with the paper's protocol.
    fn reproduction(&mut self, model: &str, ckpt: &str, dataset: &str, protocol: &str) -> Ref {
        let applicable = is_paper_model(model)
            && state_of(ckpt) == "finetuned"
            && protocol == "paper"
            && is_paper_dataset(dataset);
        let key = PaperKey {
            model: model.into(),
            state: "finetuned".into(),
            dataset: dataset.into(),
            protocol: protocol.into(),
            metric: "top1".into(),
            reference: "reproduction".into(),
        };
        // Only the reproduced models can have a figure; elsewhere nothing was attempted.
        let any = self
            .paper
            .values
            .keys()
            .any(|k| k.reference == "reproduction" && k.model == model);
        self.find(key, applicable && any)
    }

    fn timm(
        &mut self,
        model: &str,
        ckpt: &str,
        dataset: &str,
        protocol: &str,
        metric: &str,
    ) -> Ref {
        let applicable = is_paper_model(model)
            && state_of(ckpt) == "original"
            && protocol == "official"
            && TIMM_DATASETS.contains(&dataset);
        self.find(
            PaperKey {
                model: model.into(),
                state: "original".into(),
                dataset: dataset.into(),
                protocol: protocol.into(),
                metric: metric.into(),
                reference: "timm".into(),
            },
            applicable,
        )
    }
}

fn paper_name(model: &str) -> String {
    match model::variant(model) {
        Ok(v) if v.name == model => v.paper_name.to_owned(),
        _ => String::new(),
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// `paper_table.md` and `paper_table.csv` from the whole result tables.
///
/// The CSV is long-format (one metric per line) for plotting: `ours`, the published value or
/// `unknown` / `n/a`, and the difference.
pub fn paper_table(
    rob: &[RobustnessRow],
    seg: &[SegmentationRow],
    paper: &PaperResults,
) -> (String, String) {
    let mut look = Lookup {
        paper,
        used_sources: BTreeSet::new(),
    };
    let mut rob: Vec<&RobustnessRow> = rob.iter().collect();
    rob.sort_by(|a, b| {
        (
            &a.model,
            &a.checkpoint,
            dataset_rank(&a.dataset),
            &a.protocol,
        )
            .cmp(&(
                &b.model,
                &b.checkpoint,
                dataset_rank(&b.dataset),
                &b.protocol,
            ))
    });
    let mut seg: Vec<&SegmentationRow> = seg.iter().collect();
    seg.sort_by(|a, b| {
        (&a.model, &a.checkpoint, &a.dataset, &a.explainer).cmp(&(
            &b.model,
            &b.checkpoint,
            &b.dataset,
            &b.explainer,
        ))
    });

    let mut csv = String::from(
        "table,model,paper_model,checkpoint,dataset,protocol,explainer,metric,images,ours,paper,delta_paper,timm,delta_timm,reproduction,delta_reproduction\n",
    );
    let mut md = String::from(
        "# Our numbers beside the published ones\n\n\
         Rebuilt by `evaluate` from `robustness.csv` and `segmentation.csv` after every run. \
         `paper`: the RobustViT paper's number for the same model, state (original weights or \
         finetuned) and protocol; `timm`: timm's published accuracy of the original checkpoint \
         (official protocol); `repro`: a third-party reproduction of the finetuning with the \
         official code (range over its seeds; Δ to the nearer end). Δ = ours − published. \
         `unknown`: the paper reports this number but it could not be recovered (the paper's \
         tables were not retrievable; only ObjectNet figures and a few aggregator values are \
         known), so this row is not checked against the paper; `n/a`: no published number can \
         exist (another protocol, or a model or dataset outside the paper).\n\n",
    );

    md.push_str("## Robustness (accuracy, %)\n\n");
    md.push_str(
        "| model | paper name | checkpoint | dataset | protocol | images | top-1 | paper | Δ | timm | Δ timm | repro | Δ repro | top-5 | paper | Δ |\n\
         |---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &rob {
        let p1 = look.paper(&r.model, &r.checkpoint, &r.dataset, &r.protocol, "top1");
        let t1 = look.timm(&r.model, &r.checkpoint, &r.dataset, &r.protocol, "top1");
        let p5 = look.paper(&r.model, &r.checkpoint, &r.dataset, &r.protocol, "top5");
        let t5 = look.timm(&r.model, &r.checkpoint, &r.dataset, &r.protocol, "top5");
        let re1 = look.reproduction(&r.model, &r.checkpoint, &r.dataset, &r.protocol);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {:.2} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {} |",
            md_cell(&r.model),
            paper_name(&r.model),
            md_cell(&r.checkpoint),
            md_cell(&r.dataset),
            r.protocol,
            r.images,
            r.top1,
            p1.text(1),
            p1.delta(r.top1, 2),
            t1.text(3),
            t1.delta(r.top1, 2),
            re1.text(2),
            re1.delta(r.top1, 2),
            r.top5,
            p5.text(1),
            p5.delta(r.top5, 2),
        );
        let re5 = if re1 == Ref::NotApplicable {
            Ref::NotApplicable
        } else {
            Ref::Unknown
        };
        for (metric, ours, p, t, re) in [
            ("top1", r.top1, &p1, &t1, &re1),
            ("top5", r.top5, &p5, &t5, &re5),
        ] {
            let _ = writeln!(
                csv,
                "robustness,{},{},{},{},{},,{metric},{},{ours:.3},{},{},{},{},{},{}",
                csv_field(&r.model),
                paper_name(&r.model),
                csv_field(&r.checkpoint),
                csv_field(&r.dataset),
                r.protocol,
                r.images,
                p.text(3),
                p.delta(ours, 3),
                t.text(3),
                t.delta(ours, 3),
                re.text(3),
                re.delta(ours, 3),
            );
        }
    }

    md.push_str(
        "\n## Segmentation test (%; relevance for the predicted class, binarised at its mean)\n\n",
    );
    md.push_str(
        "| model | paper name | checkpoint | dataset | explainer | images | pixel acc | paper | Δ | mIoU | paper | Δ | mAP | paper | Δ | mass acc | pointing |\n\
         |---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &seg {
        let metrics = [
            ("pixel_acc", r.pixel_acc),
            ("miou", r.miou),
            ("map", r.map),
            ("mass_acc", r.mass_acc),
            ("pointing", r.pointing),
        ];
        let refs: Vec<Ref> = metrics
            .iter()
            .map(|(m, _)| {
                let known_metric = matches!(*m, "pixel_acc" | "miou" | "map");
                if known_metric {
                    look.paper(&r.model, &r.checkpoint, &r.dataset, "paper", m)
                } else {
                    Ref::NotApplicable
                }
            })
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {:.2} | {} | {} | {:.2} | {} | {} | {:.2} | {} | {} | {:.2} | {:.2} |",
            md_cell(&r.model),
            paper_name(&r.model),
            md_cell(&r.checkpoint),
            md_cell(&r.dataset),
            r.explainer,
            r.images,
            r.pixel_acc,
            refs[0].text(2),
            refs[0].delta(r.pixel_acc, 2),
            r.miou,
            refs[1].text(2),
            refs[1].delta(r.miou, 2),
            r.map,
            refs[2].text(2),
            refs[2].delta(r.map, 2),
            r.mass_acc,
            r.pointing,
        );
        for ((metric, ours), p) in metrics.iter().zip(&refs) {
            let _ = writeln!(
                csv,
                "segmentation,{},{},{},{},paper,{},{metric},{},{ours:.3},{},{},n/a,,n/a,",
                csv_field(&r.model),
                paper_name(&r.model),
                csv_field(&r.checkpoint),
                csv_field(&r.dataset),
                r.explainer,
                r.images,
                p.text(3),
                p.delta(*ours, 3),
            );
        }
    }

    md.push_str("\n## Sources of the published numbers\n\n");
    if look.used_sources.is_empty() {
        md.push_str("None of the rows above has a published number.\n");
    }
    for s in &look.used_sources {
        let _ = writeln!(md, "- {s}");
    }
    (md, csv)
}

/// Position of a dataset in the paper's order (benchmarks, segmentation, then the rest by name).
fn dataset_rank(name: &str) -> (usize, &str) {
    match Benchmark::ALL.iter().position(|b| b.name() == name) {
        Some(i) => (i, ""),
        None if name == IMAGENET_SEG => (Benchmark::ALL.len(), ""),
        None => (Benchmark::ALL.len() + 1, name),
    }
}

/// Like [`dataset_rank`], but extra sets named in `order` (the `--folder` sets, in the order the
/// user gave them) keep that order instead of going by name, so a chart lists the test sets as
/// the tables that define them do.
fn dataset_rank_in<'a>(name: &'a str, order: &[&str]) -> (usize, usize, &'a str) {
    let (rank, by_name) = dataset_rank(name);
    match order.iter().position(|o| *o == name) {
        Some(i) if by_name == name => (rank, i, ""),
        _ => (rank, order.len(), by_name),
    }
}

/// Short axis label of a dataset, so that nine groups fit under one chart.
fn short_label(dataset: &str) -> String {
    match dataset {
        "imagenet-val" => "IN-VAL".into(),
        "imagenet-v2" => "IN-V2".into(),
        "imagenet-a" => "IN-A".into(),
        "imagenet-r" => "IN-R".into(),
        "imagenet-sketch" => "SKETCH".into(),
        "objectnet" => "OBJNET".into(),
        "si-score-location" => "SI-LOC".into(),
        "si-score-rotation" => "SI-ROT".into(),
        "si-score-size" => "SI-SIZE".into(),
        other => other.to_owned(),
    }
}

/// Legend name of a checkpoint: `original`; for a weights file its run folder's name (the
/// model), with the file's stem when it is not `last` or `model` (`run (best)`); otherwise the
/// last two components of its path (a hub id, a folder).
pub fn checkpoint_label(checkpoint: &str) -> String {
    if checkpoint == "pretrained" {
        return "original".into();
    }
    let parts: Vec<&str> = checkpoint
        .trim_end_matches('/')
        .rsplit('/')
        .take(2)
        .collect();
    if let [file, folder] = parts[..] {
        if let Some(stem) = file.strip_suffix(".safetensors") {
            return match stem {
                "last" | "model" => folder.to_owned(),
                _ => format!("{folder} ({stem})"),
            };
        }
    }
    parts.into_iter().rev().collect::<Vec<_>>().join("/")
}

/// File-name-safe version of a model label.
pub fn file_stem(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One chart per (model, protocol): top-1 per dataset, one bar per checkpoint (the original
/// weights first), so "before vs after finetuning" reads off one picture. Datasets go in the
/// paper's order, then the extra sets in `extra_order`, then any others by name.
pub fn charts(rob: &[RobustnessRow], extra_order: &[&str]) -> Vec<(String, BarChart)> {
    let mut by: BTreeMap<(&str, &str), Vec<&RobustnessRow>> = BTreeMap::new();
    for r in rob {
        by.entry((&r.model, &r.protocol)).or_default().push(r);
    }
    let mut out = Vec::new();
    for ((model, protocol), rows) in by {
        let mut ckpts: Vec<&str> = rows.iter().map(|r| r.checkpoint.as_str()).collect();
        ckpts.sort_by_key(|c| (*c != "pretrained", *c));
        ckpts.dedup();
        let mut datasets: Vec<&str> = rows.iter().map(|r| r.dataset.as_str()).collect();
        datasets.sort_by_key(|d| dataset_rank_in(d, extra_order));
        datasets.dedup();
        let groups = datasets
            .iter()
            .map(|d| BarGroup {
                label: short_label(d),
                values: ckpts
                    .iter()
                    .map(|c| {
                        rows.iter()
                            .find(|r| r.dataset == *d && r.checkpoint == *c)
                            .map_or(f64::NAN, |r| r.top1)
                    })
                    .collect(),
                errors: vec![],
            })
            .collect();
        let chart = BarChart {
            title: format!("{model} top-1 ({protocol} protocol)"),
            x_label: "dataset".into(),
            y_label: "top-1 %".into(),
            series: ckpts.iter().map(|c| checkpoint_label(c)).collect(),
            groups,
            y_max: Some(100.0),
            ..Default::default()
        };
        out.push((
            format!("chart_{}_{}.png", file_stem(model), protocol),
            chart,
        ));
    }
    out
}

/// Writes `paper_table.md` and `paper_table.csv` from the merged tables into `out` and, with
/// `chart_order` (the `--folder` sets in the order given), one chart per (model, protocol).
/// Both the evaluation and the paper reproduction's merge end here. Returns the files written.
pub fn write_comparison(
    out: &Path,
    rob: &[RobustnessRow],
    seg: &[SegmentationRow],
    paper: &PaperResults,
    chart_order: Option<&[&str]>,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let (md, csv) = paper_table(rob, seg, paper);
    for (name, text) in [("paper_table.md", md), ("paper_table.csv", csv)] {
        let p = out.join(name);
        crate::results::write_atomic(&p, text.as_bytes())?;
        files.push(p);
    }
    for (name, chart) in chart_order.map_or_else(Vec::new, |o| charts(rob, o)) {
        let (w, h) = chart_size(&chart);
        let img = chart.render(w, h)?;
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| anyhow::anyhow!("encoding {name}: {e}"))?;
        let p = out.join(name);
        crate::results::write_atomic(&p, &png)?;
        files.push(p);
    }
    Ok(files)
}

/// Canvas size that fits the chart's groups and series.
pub fn chart_size(chart: &BarChart) -> (u32, u32) {
    let g = chart.groups.len().max(1) as u32;
    let s = chart.series.len().max(1) as u32;
    let width = (90 + g * (18 * (s + 1)).max(64))
        .max(chart.legend_width() + 100)
        .max(640);
    (width, 420)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rob(model: &str, ckpt: &str, dataset: &str, protocol: &str, top1: f64) -> RobustnessRow {
        RobustnessRow {
            model: model.into(),
            checkpoint: ckpt.into(),
            checkpoint_sha256: "0".into(),
            dataset: dataset.into(),
            protocol: protocol.into(),
            images: 10,
            top1,
            top5: 90.0,
            top1_err: 100.0 - top1,
            top5_err: 10.0,
            images_per_s: 1.0,
            date: "d".into(),
            git_rev: "g".into(),
        }
    }

    #[test]
    fn builtin_results_parse_and_hold_the_recovered_numbers() {
        let p = PaperResults::builtin();
        let key = |m: &str, s: &str, d: &str, pr: &str, me: &str, r: &str| PaperKey {
            model: m.into(),
            state: s.into(),
            dataset: d.into(),
            protocol: pr.into(),
            metric: me.into(),
            reference: r.into(),
        };
        assert_eq!(
            p.get(&key(
                "augreg-base",
                "finetuned",
                "objectnet",
                "paper",
                "top1",
                "paper"
            ))
            .map(|v| v.0.min),
            Some(47.1)
        );
        assert_eq!(
            p.get(&key(
                "deit-small",
                "original",
                "imagenet-a",
                "official",
                "top1",
                "timm"
            ))
            .map(|v| v.0.min),
            Some(18.72)
        );
        // The ViT-B reproduction: a range over 3 seeds.
        assert_eq!(
            p.get(&key(
                "vit-base",
                "finetuned",
                "imagenet-a",
                "paper",
                "top1",
                "reproduction"
            ))
            .map(|v| v.0),
            Some(Figure {
                min: 20.65,
                max: 21.15
            })
        );
        assert_eq!(p.len(), 20 + 7 + 30 + 5);
    }

    #[test]
    fn bad_paper_results_name_the_problem() {
        let head = "model,state,dataset,protocol,metric,value,value_max,reference,source\n";
        let e = PaperResults::parse(
            &format!("{head}augreg-base,original,objectnet,paper,top1,2,1,paper,x\n"),
            "f.csv",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("f.csv") && e.contains("range"), "{e}");
        let e = PaperResults::parse(
            &format!("{head}ar-b,original,objectnet,paper,top1,1,,paper,x\n"),
            "f.csv",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("f.csv") && e.contains("canonical"), "{e}");
        let line = "augreg-base,original,objectnet,paper,top1,1,,paper,x\n";
        let e = PaperResults::parse(&format!("{head}{line}{line}"), "f.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice"), "{e}");
        let e = PaperResults::parse(
            &format!("{head}augreg-base,original,objectnet,paper,top1,x,,paper,x\n"),
            "f.csv",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("f.csv"), "{e}");
    }

    #[test]
    fn table_cells_say_known_unknown_or_not_applicable() {
        let rows = vec![
            rob("augreg-base", "pretrained", "objectnet", "paper", 40.0),
            rob("augreg-base", "pretrained", "objectnet", "official", 45.0),
            rob("augreg-base", "pretrained", "objectnet", "testbed", 47.0),
            rob("augreg-base", "pretrained", "imagenet-a", "official", 42.5),
            rob(
                "augreg-base",
                "run/best.safetensors",
                "imagenet-a",
                "paper",
                30.0,
            ),
            rob(
                "vit-base",
                "run/best.safetensors",
                "imagenet-a",
                "paper",
                21.0,
            ),
            rob(
                "vit-base",
                "run/best.safetensors",
                "imagenet-val",
                "paper",
                80.0,
            ),
            rob("bench", "runs/x/model.safetensors", "id", "paper", 99.0),
        ];
        let (md, csv) = paper_table(&rows, &[], &PaperResults::builtin());
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[1..].to_vec(),
            vec![
                "robustness,augreg-base,AR-B,pretrained,imagenet-a,official,,top1,10,42.500,n/a,,43.133,-0.633,n/a,",
                "robustness,augreg-base,AR-B,pretrained,imagenet-a,official,,top5,10,90.000,n/a,,unknown,,n/a,",
                "robustness,augreg-base,AR-B,pretrained,objectnet,official,,top1,10,45.000,n/a,,n/a,,n/a,",
                "robustness,augreg-base,AR-B,pretrained,objectnet,official,,top5,10,90.000,n/a,,n/a,,n/a,",
                "robustness,augreg-base,AR-B,pretrained,objectnet,paper,,top1,10,40.000,41.400,-1.400,n/a,,n/a,",
                "robustness,augreg-base,AR-B,pretrained,objectnet,paper,,top5,10,90.000,63.700,+26.300,n/a,,n/a,",
                "robustness,augreg-base,AR-B,pretrained,objectnet,testbed,,top1,10,47.000,n/a,,n/a,,n/a,",
                "robustness,augreg-base,AR-B,pretrained,objectnet,testbed,,top5,10,90.000,n/a,,n/a,,n/a,",
                "robustness,augreg-base,AR-B,run/best.safetensors,imagenet-a,paper,,top1,10,30.000,unknown,,n/a,,n/a,",
                "robustness,augreg-base,AR-B,run/best.safetensors,imagenet-a,paper,,top5,10,90.000,unknown,,n/a,,n/a,",
                "robustness,bench,,runs/x/model.safetensors,id,paper,,top1,10,99.000,n/a,,n/a,,n/a,",
                "robustness,bench,,runs/x/model.safetensors,id,paper,,top5,10,90.000,n/a,,n/a,,n/a,",
                // Inside the reproduction's range: Δ 0; below it: Δ to its lower end.
                "robustness,vit-base,ViT-B,run/best.safetensors,imagenet-val,paper,,top1,10,80.000,unknown,,n/a,,81.590–81.690,-1.590",
                "robustness,vit-base,ViT-B,run/best.safetensors,imagenet-val,paper,,top5,10,90.000,unknown,,n/a,,unknown,",
                "robustness,vit-base,ViT-B,run/best.safetensors,imagenet-a,paper,,top1,10,21.000,unknown,,n/a,,20.650–21.150,+0.000",
                "robustness,vit-base,ViT-B,run/best.safetensors,imagenet-a,paper,,top5,10,90.000,unknown,,n/a,,unknown,",
            ]
        );
        assert!(md.contains(
            "| augreg-base | AR-B | pretrained | objectnet | paper | 10 | 40.00 | 41.4 | -1.40 | n/a |  | n/a |  | 90.00 | 63.7 | +26.30 |"
        ), "{md}");
        assert!(md.contains(
            "| vit-base | ViT-B | run/best.safetensors | imagenet-a | paper | 10 | 21.00 | unknown |  | n/a |  | 20.65–21.15 | +0.00 | 90.00 | unknown |  |"
        ), "{md}");
        assert!(md.contains("could not be recovered"), "{md}");
        assert!(
            md.contains("- paper: Papers with Code entry of the paper (ObjectNet)"),
            "{md}"
        );
        assert!(
            md.contains("- reproduction: RobustViT GitHub issue #4"),
            "{md}"
        );
        assert!(
            md.contains("- timm: timm results/*.csv, vit_base_patch16_224.augreg_in21k_ft_in1k"),
            "{md}"
        );
    }

    #[test]
    fn segmentation_rows_compare_with_unknown_paper_numbers() {
        let s = SegmentationRow {
            model: "vit-base".into(),
            checkpoint: "pretrained".into(),
            checkpoint_sha256: "0".into(),
            dataset: IMAGENET_SEG.into(),
            explainer: "relevance".into(),
            images: 4,
            pixel_acc: 80.0,
            miou: 60.0,
            map: 85.0,
            mass_acc: 50.0,
            pointing: 75.0,
            date: "d".into(),
            git_rev: "g".into(),
        };
        let (md, csv) = paper_table(&[], &[s], &PaperResults::builtin());
        assert!(csv.contains(
            "segmentation,vit-base,ViT-B,pretrained,imagenet-seg,paper,relevance,miou,4,60.000,unknown,,n/a,,n/a,"
        ), "{csv}");
        assert!(csv.contains(
            "segmentation,vit-base,ViT-B,pretrained,imagenet-seg,paper,relevance,pointing,4,75.000,n/a,,n/a,,n/a,"
        ), "{csv}");
        assert!(md.contains("None of the rows above has a published number."));
    }

    #[test]
    fn extra_sets_follow_the_given_order_after_the_benchmarks() {
        let rows: Vec<RobustnessRow> = ["size", "bg_swap", "imagenet-a", "id", "zzz"]
            .into_iter()
            .map(|d| rob("m", "pretrained", d, "paper", 50.0))
            .collect();
        let c = charts(&rows, &["id", "bg_swap", "size"]);
        let labels: Vec<&str> = c[0].1.groups.iter().map(|g| g.label.as_str()).collect();
        // The paper's benchmarks first, then the --folder sets as given, then others by name.
        assert_eq!(labels, ["IN-A", "id", "bg_swap", "size", "zzz"]);
        let alphabetical = charts(&rows, &[]);
        let labels: Vec<&str> = alphabetical[0]
            .1
            .groups
            .iter()
            .map(|g| g.label.as_str())
            .collect();
        assert_eq!(labels, ["IN-A", "bg_swap", "id", "size", "zzz"]);
    }

    #[test]
    fn charts_put_the_original_weights_first() {
        let rows = vec![
            rob(
                "augreg-base",
                "run/best.safetensors",
                "imagenet-a",
                "paper",
                30.0,
            ),
            rob("augreg-base", "pretrained", "imagenet-a", "paper", 25.0),
            rob("augreg-base", "pretrained", "imagenet-val", "paper", 80.0),
            rob(
                "augreg-base",
                "pretrained",
                "imagenet-val",
                "official",
                84.0,
            ),
        ];
        let c = charts(&rows, &[]);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].0, "chart_augreg-base_official.png");
        let (name, chart) = &c[1];
        assert_eq!(name, "chart_augreg-base_paper.png");
        assert_eq!(chart.series, vec!["original", "run (best)"]);
        assert_eq!(chart.groups[0].label, "IN-VAL");
        assert_eq!(chart.groups[0].values[0], 80.0);
        assert!(chart.groups[0].values[1].is_nan());
        assert_eq!(chart.groups[1].values, vec![25.0, 30.0]);
        let (w, h) = chart_size(chart);
        chart.render(w, h).unwrap();
        assert_eq!(checkpoint_label("a/b/c/best.safetensors"), "c (best)");
        assert_eq!(
            checkpoint_label("runs/rel-finetuned/last.safetensors"),
            "rel-finetuned"
        );
        assert_eq!(checkpoint_label("org/model@v2"), "org/model@v2");
    }
}
