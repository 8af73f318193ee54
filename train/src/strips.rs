//! The paper's 4-panel pictures (image, mask, relevance before, relevance after) for a fixed set
//! of validation images, written every epoch, titled with the class, each model's prediction
//! and a colour bar.

use anyhow::Result;
use candle_core::Device;
use serde::{Deserialize, Serialize};

use data::labels::imagenet_short_name;
use data::TrainExample;

use crate::batches::load_all;
use crate::config::TrainConfig;
use crate::run_dir::RunDir;

/// Relevance maps (per image, H*W in [0, 1]) for the ground-truth classes, and the model's
/// top prediction (class, probability) of each image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StripMaps {
    pub maps: Vec<Vec<f32>>,
    pub predictions: Vec<(u32, f32)>,
}

/// `relevance_before.json` as runs before the titled strips wrote it: the maps only.
#[derive(Deserialize)]
#[serde(untagged)]
enum SavedMaps {
    Titled(StripMaps),
    MapsOnly(Vec<Vec<f32>>),
}

/// Relevance maps for the ground-truth classes and the top predictions.
pub fn relevance_maps(
    vit: &model::Vit,
    vis: &[TrainExample],
    cfg: &TrainConfig,
    device: &Device,
) -> Result<StripMaps> {
    let batch = load_all(cfg, vis, vit.config().img_size, device)?;
    let rel = relevance::relevance_map(vit, &batch.images, Some(&batch.labels))?;
    let probs = candle_nn::ops::softmax_last_dim(&rel.logits)?.to_vec2::<f32>()?;
    let predictions = probs
        .iter()
        .map(|p| {
            let best = data::ranking::top_k(p, 1, None)[0];
            (best as u32, p[best])
        })
        .collect();
    Ok(StripMaps {
        maps: rel.map.flatten_from(1)?.to_vec2::<f32>()?,
        predictions,
    })
}

fn maps_file(run: &RunDir) -> std::path::PathBuf {
    run.file("strips/relevance_before.json")
}

/// Keeps the original model's maps so a resumed run draws the same "before" panel.
pub fn save_before(run: &RunDir, maps: &StripMaps) -> Result<()> {
    crate::run_dir::write_atomic(&maps_file(run), serde_json::to_string(maps)?.as_bytes())
}

fn load_before(run: &RunDir) -> Result<StripMaps> {
    let saved: SavedMaps = serde_json::from_str(&std::fs::read_to_string(maps_file(run))?)?;
    Ok(match saved {
        SavedMaps::Titled(m) => m,
        SavedMaps::MapsOnly(maps) => StripMaps {
            maps,
            predictions: vec![],
        },
    })
}

fn prediction_title(p: Option<&(u32, f32)>) -> Option<String> {
    p.map(|&(c, prob)| format!("{} {:.0}%", imagenet_short_name(c), 100.0 * prob))
}

pub fn save_strips(
    run: &RunDir,
    vis: &[TrainExample],
    after: &StripMaps,
    epoch: usize,
    cfg: &TrainConfig,
    img_size: usize,
) -> Result<()> {
    let before = load_before(run)?;
    let batch = load_all(cfg, vis, img_size, &Device::Cpu)?;
    let side = batch.images.dim(3)?;
    let masks = batch
        .masks
        .as_ref()
        .map(|m| m.flatten_from(1)?.to_vec2::<f32>())
        .transpose()?;
    for i in 0..batch.labels.len() {
        let rgb = relevance::render::to_rgb_image(&batch.images.get(i)?, cfg.mean, cfg.std)?;
        let mask = masks
            .as_ref()
            .map(|m| m[i].clone())
            .unwrap_or_else(|| vec![1.0; side * side]);
        let titles = figures::StripTitles {
            class: imagenet_short_name(batch.labels[i]),
            before: prediction_title(before.predictions.get(i)),
            after: prediction_title(after.predictions.get(i)),
            epoch: Some(epoch),
        };
        let strip = figures::training_strip(
            &rgb,
            &mask,
            &before.maps[i],
            &after.maps[i],
            figures::ColorMap::default(),
            &titles,
        )?;
        figures::save_png(
            &strip,
            &run.file(&format!("strips/epoch_{epoch:03}_img_{i}.png")),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_before_files_still_read() {
        let old: SavedMaps = serde_json::from_str("[[0.0, 1.0]]").unwrap();
        assert!(matches!(old, SavedMaps::MapsOnly(m) if m == vec![vec![0.0, 1.0]]));
        let m = StripMaps {
            maps: vec![vec![0.5]],
            predictions: vec![(3, 0.25)],
        };
        let new: SavedMaps = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert!(matches!(new, SavedMaps::Titled(n) if n == m));
    }
}
