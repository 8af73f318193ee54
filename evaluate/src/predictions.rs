//! Per-image predictions (`evaluate --predictions FILE`): the five most probable classes of
//! every classified image, so that single predictions can be compared with another
//! implementation's rather than only the accuracies.
//!
//! Long format, one line per (model, dataset, preprocessing, image, rank):
//! `model,checkpoint,dataset,protocols,path,label,rank,class,wnid,name,score`. `protocols` are
//! the protocols that share this preprocessing (e.g. `official+testbed`); `path` is relative
//! to the dataset root; `label` the accepted ImageNet classes (`;`-separated, the paper's
//! target first); `score` the softmax probability over all the head's classes (no class mask).
//! `wnid` and `name` are filled for an ImageNet-1k head.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::topk::top_k;

/// Header line of the predictions file.
pub const HEADER: &str = "model,checkpoint,dataset,protocols,path,label,rank,class,wnid,name,score";

/// What identifies a group of predictions.
pub struct Context<'a> {
    pub model: &'a str,
    pub checkpoint: &'a str,
    pub dataset: &'a str,
    pub protocols: &'a str,
    pub root: &'a Path,
}

/// Collects prediction lines and writes them atomically.
#[derive(Debug, Clone)]
pub struct Predictions {
    path: PathBuf,
    text: String,
}

fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Softmax probabilities of `logits` (f64, max-subtracted so large logits do not overflow).
pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let m = logits
        .iter()
        .map(|&v| f64::from(v))
        .fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|&v| (f64::from(v) - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

impl Predictions {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            text: format!("{HEADER}\n"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds the top 5 of one image.
    pub fn add(&mut self, ctx: &Context, image: &Path, targets: &[u32], logits: &[f32]) {
        let rel = image.strip_prefix(ctx.root).unwrap_or(image);
        let rel = rel.to_string_lossy().replace('\\', "/");
        let label: Vec<String> = targets.iter().map(u32::to_string).collect();
        let probs = softmax(logits);
        let imagenet = logits.len() == 1000;
        for (rank, c) in top_k(logits, 5, None).into_iter().enumerate() {
            let (wnid, name) = if imagenet {
                (
                    data::labels::imagenet_wnids()[c],
                    data::labels::imagenet_class_names()[c].as_str(),
                )
            } else {
                ("", "")
            };
            let _ = writeln!(
                self.text,
                "{},{},{},{},{},{},{},{c},{wnid},{},{:.6}",
                field(ctx.model),
                field(ctx.checkpoint),
                field(ctx.dataset),
                ctx.protocols,
                field(&rel),
                label.join(";"),
                rank + 1,
                field(name),
                probs[c],
            );
        }
    }

    /// Writes everything collected so far (atomically: a reader never sees half a file).
    pub fn write(&self) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        model::weights::write_atomic(&self.path, self.text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_of_known_logits() {
        let p = softmax(&[0.0, (2f32).ln(), 1.0]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((p[1] / p[0] - 2.0).abs() < 1e-6);
        // Large logits do not overflow.
        let p = softmax(&[1000.0, 1000.0]);
        assert_eq!(p, vec![0.5, 0.5]);
        let p = softmax(&[0.0, (3f32).ln()]);
        assert!((p[0] - 0.25).abs() < 1e-7 && (p[1] - 0.75).abs() < 1e-7);
    }

    #[test]
    fn lines_name_the_image_rank_class_and_probability() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Predictions::new(dir.path().join("sub/pred.csv"));
        let ctx = Context {
            model: "m",
            checkpoint: "a,b",
            dataset: "objectnet",
            protocols: "official+testbed",
            root: Path::new("/data/objectnet-1.0/images"),
        };
        // 1000 classes: 409 first (e^2 / (e^2 + e + 998)), 530 second, then 0..2 by index.
        let mut logits = vec![0f32; 1000];
        logits[409] = 2.0;
        logits[530] = 1.0;
        p.add(
            &ctx,
            Path::new("/data/objectnet-1.0/images/alarm_clock/x.png"),
            &[409, 530],
            &logits,
        );
        p.write().unwrap();
        let text = std::fs::read_to_string(dir.path().join("sub/pred.csv")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], HEADER);
        assert_eq!(lines.len(), 6);
        let z = 2f64.exp() + 1f64.exp() + 998.0;
        let first = format!(
            "m,\"a,b\",objectnet,official+testbed,alarm_clock/x.png,409;530,1,409,{},{},{:.6}",
            data::labels::imagenet_wnids()[409],
            field(&data::labels::imagenet_class_names()[409]),
            2f64.exp() / z
        );
        assert_eq!(lines[1], first);
        assert!(lines[2].contains(",2,530,"), "{}", lines[2]);
        assert!(lines[3].contains(",3,0,n01440764,"), "{}", lines[3]);
        assert!(
            lines[5].ends_with(&format!(",{:.6}", 1.0 / z)),
            "{}",
            lines[5]
        );
        // A head other than ImageNet-1k: no wnid or name.
        let mut q = Predictions::new(dir.path().join("q.csv"));
        q.add(&ctx, Path::new("rel/y.png"), &[1], &[0.0, 1.0]);
        let line = q.text.lines().nth(1).unwrap().to_owned();
        assert!(line.contains(",rel/y.png,1,1,1,,,"), "{line}");
    }
}
