//! Tables and pictures of the embedded benchmark, aggregated over seeds from the CSV files
//! that `evaluate` wrote.

use anyhow::{Context, Result};
use evaluate::results::{read_rows, write_atomic, RobustnessRow, SegmentationRow};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::demo::MODELS;
use crate::shortcut_data::TestSet;

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

/// Columns of the summary: the six accuracies, then relevance/mask agreement on id and bg_swap.
const SEG_COLS: [(&str, &str, &str); 4] = [
    ("mIoU", "id", "miou"),
    ("mass", "id", "mass"),
    ("mIoU_sw", "bg_swap", "miou"),
    ("mass_sw", "bg_swap", "mass"),
];

/// Per (model, column): one value per seed.
type Table = BTreeMap<(String, String), Vec<(u64, f64)>>;

fn collect(out: &Path, variant: &str, seeds: &[u64]) -> Result<Table> {
    let mut t: Table = BTreeMap::new();
    for &seed in seeds {
        let dir = out.join("eval").join(format!("{variant}-seed-{seed}"));
        let rob: Vec<RobustnessRow> = read_rows(&dir.join("robustness.csv"))
            .with_context(|| format!("reading the accuracies of seed {seed}"))?;
        for r in rob.iter().filter(|r| r.protocol == "paper") {
            t.entry((r.model.clone(), r.dataset.clone()))
                .or_default()
                .push((seed, r.top1));
        }
        let seg: Vec<SegmentationRow> = read_rows(&dir.join("segmentation.csv"))
            .with_context(|| format!("reading the segmentation metrics of seed {seed}"))?;
        for r in seg.iter().filter(|r| r.explainer == "relevance") {
            for (col, set, metric) in SEG_COLS {
                if r.dataset == set {
                    let v = if metric == "miou" { r.miou } else { r.mass_acc };
                    t.entry((r.model.clone(), col.to_string()))
                        .or_default()
                        .push((seed, v));
                }
            }
        }
    }
    Ok(t)
}

fn value(t: &Table, model: &str, col: &str) -> Vec<f64> {
    t.get(&(model.to_string(), col.to_string()))
        .map(|v| v.iter().map(|(_, x)| *x).collect())
        .unwrap_or_default()
}

fn per_seed(t: &Table, model: &str, col: &str, seed: u64) -> Option<f64> {
    t.get(&(model.to_string(), col.to_string()))?
        .iter()
        .find(|(s, _)| *s == seed)
        .map(|(_, v)| *v)
}

/// Reads the runs and evaluations under `out`, writes `summary.md`, `summary.csv`,
/// `per_seed.csv` and `accuracy.png` into `dest`, copies the first seed's before/after
/// relevance strips to `dest/strips`, and returns the Markdown.
pub fn write(
    out: &Path,
    dest: &Path,
    variant: &str,
    seeds: &[u64],
    seconds: f64,
) -> Result<String> {
    let t = collect(out, variant, seeds)?;
    let cols: Vec<String> = TestSet::ALL
        .iter()
        .map(|s| s.name().to_string())
        .chain(SEG_COLS.iter().map(|c| c.0.to_string()))
        .collect();
    let mut md = String::new();
    writeln!(
        md,
        "# Embedded benchmark: `{variant}` variant, seeds {seeds:?}"
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "Accuracy in % on each test set and relevance/mask agreement (mIoU, relevance mass in %) on {} id and bg_swap images; mean ± std over seeds.",
        crate::demo::DemoSettings::load().segmentation_images
    )?;
    writeln!(md)?;
    writeln!(md, "| model | {} |", cols.join(" | "))?;
    writeln!(md, "|---|{}", "---|".repeat(cols.len()))?;
    let mut csv = csv::Writer::from_writer(Vec::new());
    csv.write_record(["model", "metric", "mean", "std", "seeds"])?;
    for m in MODELS {
        let cells: Vec<String> = cols
            .iter()
            .map(|c| {
                let v = value(&t, m, c);
                if v.is_empty() {
                    return "n/a".to_string();
                }
                let (mu, sd) = mean_std(&v);
                csv.write_record([
                    m,
                    c.as_str(),
                    &format!("{mu:.2}"),
                    &format!("{sd:.2}"),
                    &v.len().to_string(),
                ])
                .ok();
                if v.len() > 1 {
                    format!("{mu:.1} ± {sd:.1}")
                } else {
                    format!("{mu:.1}")
                }
            })
            .collect();
        writeln!(md, "| {m} | {} |", cells.join(" | "))?;
    }
    writeln!(md)?;
    writeln!(
        md,
        "Relevance finetuning minus the cross-entropy control on bg_swap, per seed (points):"
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "| seed | pretrained | ce-finetuned | rel-finetuned | rel − ce |"
    )?;
    writeln!(md, "|---|---|---|---|---|")?;
    let mut seeds_csv = csv::Writer::from_writer(Vec::new());
    seeds_csv.write_record(["seed", "model", "metric", "value"])?;
    for &seed in seeds {
        let g = |m: &str| per_seed(&t, m, "bg_swap", seed);
        let f = |v: Option<f64>| v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "n/a".into());
        let d = g("rel-finetuned")
            .zip(g("ce-finetuned"))
            .map(|(a, b)| a - b);
        writeln!(
            md,
            "| {seed} | {} | {} | {} | {} |",
            f(g("pretrained")),
            f(g("ce-finetuned")),
            f(g("rel-finetuned")),
            d.map(|x| format!("{x:+.1}"))
                .unwrap_or_else(|| "n/a".into())
        )?;
        for m in MODELS {
            for c in &cols {
                if let Some(v) = per_seed(&t, m, c, seed) {
                    seeds_csv.write_record([
                        &seed.to_string(),
                        m,
                        c.as_str(),
                        &format!("{v:.3}"),
                    ])?;
                }
            }
        }
    }
    let diffs = rel_minus_ce(&t, seeds);
    if diffs.len() > 1 {
        let (m, sd) = mean_std(&diffs);
        let cell = |model: &str| {
            let (mu, s) = mean_std(&value(&t, model, "bg_swap"));
            format!("{mu:.1} ± {s:.1}")
        };
        writeln!(
            md,
            "| mean ± std | {} | {} | {} | {m:+.1} ± {sd:.1} |",
            cell("pretrained"),
            cell("ce-finetuned"),
            cell("rel-finetuned")
        )?;
    }
    writeln!(md)?;
    if seeds.len() == 1 {
        // Measured: the same code moves one seed's rel − ce by about ±10 points between
        // CPUs (floating-point summation order), and pretraining seeds differ more.
        writeln!(
            md,
            "One seed only: a single seed's figures move by about ±10 points between machines and seeds; \
             run `--seeds 0,1,2` and read the means.\n"
        )?;
    }
    md.push_str(&expectations(&t, variant, seeds)?);
    writeln!(md)?;
    writeln!(
        md,
        "Wall time: {seconds:.0} s on this machine ({} threads).",
        rayon::current_num_threads()
    )?;
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    write_atomic(&dest.join("summary.md"), md.as_bytes())?;
    write_atomic(&dest.join("summary.csv"), &csv.into_inner()?)?;
    write_atomic(&dest.join("per_seed.csv"), &seeds_csv.into_inner()?)?;
    chart(&t, seeds.len(), &dest.join("accuracy.png"))?;
    copy_strips(out, dest, variant, seeds[0])?;
    Ok(md)
}

/// The design's acceptance ranges beside what this run measured.
fn expectations(t: &Table, variant: &str, seeds: &[u64]) -> Result<String> {
    let v: serde_json::Value = serde_json::from_str(crate::demo::DEMO_SETTINGS)?;
    let e = &v["expected"][variant];
    let num = |k: &str| e[k].as_f64().unwrap_or(f64::NAN);
    let range = |k: &str| {
        (
            e[k][0].as_f64().unwrap_or(f64::NAN),
            e[k][1].as_f64().unwrap_or(f64::NAN),
        )
    };
    let mut md = String::new();
    writeln!(
        md,
        "Against the design's ranges (3 PyTorch seeds; indicative):"
    )?;
    writeln!(md)?;
    writeln!(md, "| quantity | expected | measured | within |")?;
    writeln!(md, "|---|---|---|---|")?;
    let mut row =
        |name: &str, exp: String, vals: Vec<f64>, ok: &dyn Fn(f64) -> bool| -> Result<()> {
            let shown: Vec<String> = vals.iter().map(|x| format!("{x:.1}")).collect();
            let within = !vals.is_empty() && vals.iter().all(|&x| ok(x));
            writeln!(
                md,
                "| {name} | {exp} | {} | {} |",
                shown.join(", "),
                if within { "yes" } else { "no" }
            )?;
            Ok(())
        };
    let pre = |c: &str| value(t, "pretrained", c);
    row(
        "pretrained id",
        format!("≥ {}", num("pretrained_id_min")),
        pre("id"),
        &|x| x >= num("pretrained_id_min"),
    )?;
    row(
        "pretrained fg_only",
        format!("≥ {}", num("pretrained_fg_only_min")),
        pre("fg_only"),
        &|x| x >= num("pretrained_fg_only_min"),
    )?;
    let (a, b) = range("pretrained_bg_swap");
    row(
        "pretrained bg_swap",
        format!("{a}–{b}"),
        pre("bg_swap"),
        &|x| (a..=b).contains(&x),
    )?;
    let diffs = rel_minus_ce(t, seeds);
    let dmin = num("rel_minus_ce_bg_swap_min");
    row(
        "rel − ce on bg_swap, every seed",
        format!("≥ +{dmin}"),
        diffs,
        &|x| x >= dmin,
    )?;
    let (a, b) = range("rel_bg_swap");
    row(
        "rel bg_swap",
        format!("{a}–{b}"),
        value(t, "rel-finetuned", "bg_swap"),
        &|x| (a..=b).contains(&x),
    )?;
    row(
        "rel id",
        format!("≥ {}", num("rel_id_min")),
        value(t, "rel-finetuned", "id"),
        &|x| x >= num("rel_id_min"),
    )?;
    Ok(md)
}

/// Relevance minus CE finetuning on bg_swap, per seed that has both.
fn rel_minus_ce(t: &Table, seeds: &[u64]) -> Vec<f64> {
    seeds
        .iter()
        .filter_map(|&s| {
            Some(
                per_seed(t, "rel-finetuned", "bg_swap", s)?
                    - per_seed(t, "ce-finetuned", "bg_swap", s)?,
            )
        })
        .collect()
}

/// What each test set is, for the chart's caption (same order as [`TestSet::ALL`]).
fn test_set_note(s: TestSet) -> &'static str {
    match s {
        TestSet::Id => "id = backgrounds as in training",
        TestSet::BgRand => "bg_rand = random background",
        TestSet::BgSwap => "bg_swap = another class's background",
        TestSet::FgOnly => "fg_only = grey background",
        TestSet::Loc => "loc = object moved to a corner",
        TestSet::Size => "size = object at half size",
    }
}

/// Mean top-1 per test set and model with ± one standard deviation over seeds, and the
/// chance level (one class in `classes`).
fn chart(t: &Table, seeds: usize, path: &Path) -> Result<()> {
    let classes = crate::demo::DemoSettings::load().data.classes;
    let groups = TestSet::ALL
        .iter()
        .map(|set| {
            let stats: Vec<(f64, f64)> = MODELS
                .iter()
                .map(|m| {
                    let v = value(t, m, set.name());
                    if v.is_empty() {
                        (f64::NAN, f64::NAN)
                    } else {
                        mean_std(&v)
                    }
                })
                .collect();
            figures::chart::BarGroup {
                label: set.name().to_string(),
                values: stats.iter().map(|s| s.0).collect(),
                errors: stats.iter().map(|s| s.1).collect(),
            }
        })
        .collect();
    let spread = if seeds > 1 {
        format!("Bars: mean over {seeds} seeds; error bars: ± one standard deviation.")
    } else {
        "Bars: one seed (no error bars).".to_string()
    };
    let sets: Vec<&str> = TestSet::ALL.iter().map(|s| test_set_note(*s)).collect();
    let c = figures::chart::BarChart {
        title: "Embedded benchmark: top-1 accuracy per test set".into(),
        x_label: "test set".into(),
        y_label: "top-1 accuracy (%)".into(),
        series: MODELS.iter().map(|m| m.to_string()).collect(),
        groups,
        y_max: Some(100.0),
        chance: Some(100.0 / classes as f64),
        caption: vec![spread, format!("Test sets: {}.", sets.join("; "))],
    };
    c.save_png(path, 960, 520)?;
    Ok(())
}

/// The relevance-finetuned run's last strips (image, mask, relevance before, after).
fn copy_strips(out: &Path, dest: &Path, variant: &str, seed: u64) -> Result<()> {
    let src = out
        .join("runs")
        .join(format!("{variant}-seed-{seed}"))
        .join("rel-finetuned")
        .join("strips");
    let dst = dest.join("strips");
    std::fs::create_dir_all(&dst)?;
    let mut files: Vec<_> = std::fs::read_dir(&src)
        .with_context(|| format!("reading {}", src.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    files.sort();
    let last_epoch = files
        .iter()
        .filter_map(|p| p.file_name()?.to_str()?.get(6..9)?.parse::<usize>().ok())
        .max();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if last_epoch.is_some_and(|e| name.starts_with(&format!("epoch_{e:03}"))) {
            let img = name.split("_img_").nth(1).unwrap_or(&name).to_string();
            // The strips are drawn titled, at a readable panel size: copied as they are.
            std::fs::copy(&f, dst.join(format!("before_after_{img}")))
                .with_context(|| format!("copying {}", f.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chart of the committed full benchmark: three seeds, so every bar has an error bar.
    /// `ROBUSTVIT_KEEP_CHART=FILE` keeps the picture (to look at it).
    #[test]
    fn chart_of_the_committed_benchmark() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/demo");
        let t = collect(&root, "full", &[0, 1, 2]).unwrap();
        assert_eq!(value(&t, "rel-finetuned", "bg_swap").len(), 3);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("accuracy.png");
        chart(&t, 3, &p).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (960, 520));
        if let Some(keep) = std::env::var_os("ROBUSTVIT_KEEP_CHART") {
            std::fs::copy(&p, keep).unwrap();
        }
    }
}
