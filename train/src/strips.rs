//! The paper's 4-panel pictures (image, mask, relevance before, relevance after) for a fixed set
//! of validation images, written every epoch.

use anyhow::Result;
use candle_core::Device;

use crate::config::TrainConfig;
use crate::run_dir::RunDir;
use crate::trainer::{load_batch, Example};

/// Relevance maps (per image, H*W in [0, 1]) for the ground-truth classes.
pub fn relevance_maps(
    vit: &model::Vit,
    vis: &[Example],
    cfg: &TrainConfig,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let indexed: Vec<(usize, &Example)> = vis.iter().enumerate().collect();
    let batch = load_batch(&indexed, cfg, false, 0, vit.config().img_size, device)?;
    let rel = relevance::relevance_map(vit, &batch.images, Some(&batch.labels))?;
    Ok(rel.map.flatten_from(1)?.to_vec2::<f32>()?)
}

fn maps_file(run: &RunDir) -> std::path::PathBuf {
    run.file("strips/relevance_before.json")
}

/// Keeps the original model's maps so a resumed run draws the same "before" panel.
pub fn save_before(run: &RunDir, maps: &[Vec<f32>]) -> Result<()> {
    crate::run_dir::write_atomic(&maps_file(run), serde_json::to_string(maps)?.as_bytes())
}

pub fn save_strips(
    run: &RunDir,
    vis: &[Example],
    after: &[Vec<f32>],
    epoch: usize,
    cfg: &TrainConfig,
    img_size: usize,
) -> Result<()> {
    let before: Vec<Vec<f32>> = serde_json::from_str(&std::fs::read_to_string(maps_file(run))?)?;
    let indexed: Vec<(usize, &Example)> = vis.iter().enumerate().collect();
    let batch = load_batch(&indexed, cfg, false, 0, img_size, &Device::Cpu)?;
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
        let strip = relevance::render::strip(&rgb, &mask, &before[i], &after[i])?;
        relevance::render::save_png(
            &strip,
            &run.file(&format!("strips/epoch_{epoch:03}_img_{i}.png")),
        )?;
    }
    Ok(())
}
