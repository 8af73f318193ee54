//! A contact sheet of the dataset for a visual check.

use std::fs;
use std::path::Path;

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};

use super::split::generate_split;
use super::{io_err, Result, Split, SynthConfig, SynthError, TestSet};

/// Contact sheets are drawn at this nearest-neighbour scale so 1-px textures stay visible.
const SHEET_SCALE: usize = 4;
const SHEET_GAP: usize = 2;

/// Render a contact sheet for a visual check: one row per split (train, the six test sets,
/// finetune), one column per class (its first image in that split), and a last row with the
/// id set's masks. Drawn ×4 with nearest neighbour so the 1-px textures stay visible.
pub fn contact_sheet(cfg: &SynthConfig, path: &Path) -> Result<()> {
    cfg.validate()?;
    let mut splits = vec![Split::Train];
    splits.extend(TestSet::ALL.into_iter().map(Split::Test));
    splits.push(Split::Finetune);
    let (k, s) = (cfg.classes, cfg.size);
    let mut rows: Vec<Vec<Option<Vec<u8>>>> = Vec::new();
    for split in splits {
        let samples = generate_split(cfg, split);
        rows.push(
            (0..k)
                .map(|c| samples.iter().find(|x| x.class == c).map(|x| x.rgb.clone()))
                .collect(),
        );
        if split == Split::Test(TestSet::Id) {
            let masks = (0..k)
                .map(|c| {
                    samples
                        .iter()
                        .find(|x| x.class == c)
                        .map(|x| x.mask.iter().flat_map(|&m| [m * 255; 3]).collect())
                })
                .collect();
            rows.push(masks);
        }
    }
    let cell = s * SHEET_SCALE + SHEET_GAP;
    let (w, h) = (k * cell + SHEET_GAP, rows.len() * cell + SHEET_GAP);
    let mut out = vec![255u8; w * h * 3];
    for (r, row) in rows.iter().enumerate() {
        for (c, img) in row.iter().enumerate() {
            let Some(img) = img else { continue };
            let (ox, oy) = (SHEET_GAP + c * cell, SHEET_GAP + r * cell);
            for y in 0..s * SHEET_SCALE {
                for x in 0..s * SHEET_SCALE {
                    let src = 3 * ((y / SHEET_SCALE) * s + x / SHEET_SCALE);
                    let dst = 3 * ((oy + y) * w + ox + x);
                    out[dst..dst + 3].copy_from_slice(&img[src..src + 3]);
                }
            }
        }
    }
    let mut buf = Vec::new();
    PngEncoder::new(&mut buf)
        .write_image(&out, w as u32, h as u32, ExtendedColorType::Rgb8)
        .map_err(|source| SynthError::Encode {
            path: path.to_path_buf(),
            source,
        })?;
    fs::write(path, buf).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::super::test_configs::tiny;
    use super::*;

    #[test]
    fn contact_sheet_has_one_row_per_split() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sheet.png");
        contact_sheet(&tiny(), &path).unwrap();
        let img = image::open(&path).unwrap();
        let cell = 32 * SHEET_SCALE + SHEET_GAP;
        assert_eq!(img.width() as usize, 8 * cell + SHEET_GAP);
        assert_eq!(img.height() as usize, 9 * cell + SHEET_GAP);
    }
}
