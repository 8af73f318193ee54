//! A relevance heatmap over the image, mask pictures, the untitled four-panel strip and PNG
//! writing.
//!
//! The overlay follows `show_cam_on_image` of the reference code: map colours in [0, 1] added
//! to the image in [0, 1], the sum divided by its maximum. Strong relevance therefore shows as
//! the colour map's top colour while the image stays visible everywhere.

use image::{ImageFormat, Rgb, RgbImage};
use std::path::Path;

use crate::{ColorMap, FigureError, Result};

/// White columns between the panels of [`strip`].
pub const STRIP_GAP: u32 = 4;

fn check_len(what: &str, values: &[f32], image: &RgbImage) -> Result<()> {
    let n = (image.width() * image.height()) as usize;
    if values.len() != n {
        return Err(FigureError::Invalid(format!(
            "{what} has {} values but the image is {}x{} ({n} pixels)",
            values.len(),
            image.width(),
            image.height()
        )));
    }
    Ok(())
}

/// The image with `map` (row-major H·W values in [0, 1]) as a heatmap in `cmap` on top.
pub fn heatmap_overlay(image: &RgbImage, map: &[f32], cmap: ColorMap) -> Result<RgbImage> {
    check_len("relevance map", map, image)?;
    let sum: Vec<[f32; 3]> = image
        .pixels()
        .zip(map)
        .map(|(p, &v)| {
            let h = cmap.rgb(v);
            [0, 1, 2].map(|c| f32::from(h[c]) / 255.0 + f32::from(p.0[c]) / 255.0)
        })
        .collect();
    let max = sum
        .iter()
        .flat_map(|p| p.iter().copied())
        .fold(0f32, f32::max)
        .max(f32::MIN_POSITIVE);
    let mut out = RgbImage::new(image.width(), image.height());
    for (o, s) in out.pixels_mut().zip(&sum) {
        *o = Rgb(s.map(|x| (x / max * 255.0).round() as u8));
    }
    Ok(out)
}

/// A mask (values in [0, 1]) as grey levels: background black, object white.
pub fn mask_image(mask: &[f32], width: u32, height: u32) -> Result<RgbImage> {
    if mask.len() != (width * height) as usize {
        return Err(FigureError::Invalid(format!(
            "mask has {} values for a {width}x{height} picture",
            mask.len()
        )));
    }
    let mut out = RgbImage::new(width, height);
    for (o, &m) in out.pixels_mut().zip(mask) {
        let g = (m.clamp(0.0, 1.0) * 255.0).round() as u8;
        *o = Rgb([g, g, g]);
    }
    Ok(out)
}

/// The four panels side by side, separated by [`STRIP_GAP`] white columns: the image, the
/// ground-truth mask, the relevance before and after fine-tuning (as overlays). Masks and maps
/// are row-major H·W values in [0, 1]. The titled version is [`crate::sheet::training_strip`].
pub fn strip(
    image: &RgbImage,
    mask: &[f32],
    before: &[f32],
    after: &[f32],
    cmap: ColorMap,
) -> Result<RgbImage> {
    check_len("mask", mask, image)?;
    let (w, h) = image.dimensions();
    let panels = [
        image.clone(),
        mask_image(mask, w, h)?,
        heatmap_overlay(image, before, cmap)?,
        heatmap_overlay(image, after, cmap)?,
    ];
    let mut out = RgbImage::from_pixel(4 * w + 3 * STRIP_GAP, h, Rgb([255, 255, 255]));
    for (i, p) in panels.iter().enumerate() {
        image::imageops::replace(&mut out, p, i64::from(i as u32 * (w + STRIP_GAP)), 0);
    }
    Ok(out)
}

/// Writes a PNG atomically (temporary file, then rename), creating the folder.
pub fn save_png(image: &RgbImage, path: &Path) -> Result<()> {
    let err = |msg: String| FigureError::Save {
        path: path.to_path_buf(),
        msg,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot be written: {e}")))?;
    }
    write_png_atomic(image, path).map_err(err)
}

/// Encodes `image` as PNG into `path.tmp`, then renames it over `path`, so that an interrupted
/// save never leaves half a picture. The folder must exist.
pub(crate) fn write_png_atomic(image: &RgbImage, path: &Path) -> Result<(), String> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut bytes, ImageFormat::Png)
        .map_err(|e| format!("cannot be encoded: {e}"))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, bytes.into_inner()).map_err(|e| format!("cannot be written: {e}"))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot be written: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_pixels() {
        let (w, h) = (3u32, 2u32);
        let img = RgbImage::from_fn(w, h, |x, y| Rgb([(10 * x) as u8, (20 * y) as u8, 200]));
        let mask = [0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        let before = [0.0; 6];
        let after = [0.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        let s = strip(&img, &mask, &before, &after, ColorMap::Jet).unwrap();
        assert_eq!(s.dimensions(), (4 * w + 3 * STRIP_GAP, h));
        // Panel 1 is the image.
        assert_eq!(s.get_pixel(1, 1), img.get_pixel(1, 1));
        // Panel 2: black where the mask is 0, white where it is 1.
        let x0 = w + STRIP_GAP;
        assert_eq!(s.get_pixel(x0, 0).0, [0, 0, 0]);
        assert_eq!(s.get_pixel(x0 + 1, 0).0, [255, 255, 255]);
        // Gap columns are white.
        assert_eq!(s.get_pixel(w, 0).0, [255, 255, 255]);
        // Panel 3 (all-zero relevance): image + jet(0) = image + (0, 0, 128/255), divided by the
        // maximum channel sum 200/255 + 128/255 (blue): pixel (0, 0) = (0, 0, 200) → blue 255.
        let x2 = 2 * (w + STRIP_GAP);
        assert_eq!(s.get_pixel(x2, 0).0, [0, 0, 255]);
        // Pixel (2, 1) = (20, 20, 200) + (0, 0, 128): red = round(20 / 328 · 255) = 16.
        assert_eq!(s.get_pixel(x2 + 2, 1).0, [16, 16, 255]);
        // Panel 4: the relevant pixel (2, 1) turns dark red: (20 + 128, 20, 200) / 328.
        let x3 = 3 * (w + STRIP_GAP);
        assert_eq!(s.get_pixel(x3 + 2, 1).0, [115, 16, 155]);
        // Wrong sizes are reported.
        assert!(strip(&img, &mask[..5], &before, &after, ColorMap::Jet).is_err());
    }

    #[test]
    fn viridis_overlay_shows_high_relevance_in_yellow() {
        let img = RgbImage::from_pixel(2, 1, Rgb([0, 0, 0]));
        let o = heatmap_overlay(&img, &[0.0, 1.0], ColorMap::Viridis).unwrap();
        // Black image: the overlay is the colour map divided by its largest channel (253).
        let top = ColorMap::Viridis.rgb(1.0);
        let max = f32::from(*top.iter().max().unwrap());
        let scaled = |c: [u8; 3]| c.map(|v| (f32::from(v) / max * 255.0).round() as u8);
        assert_eq!(o.get_pixel(1, 0).0, scaled(top));
        assert_eq!(o.get_pixel(0, 0).0, scaled(ColorMap::Viridis.rgb(0.0)));
        assert!(mask_image(&[0.5], 2, 1).is_err());
        assert_eq!(
            mask_image(&[0.5, 1.0], 2, 1).unwrap().get_pixel(0, 0).0,
            [128; 3]
        );
    }

    #[test]
    fn png_round_trip() {
        let img = RgbImage::from_fn(3, 2, |x, y| Rgb([x as u8 * 80, y as u8 * 100, 7]));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b.png");
        save_png(&img, &p).unwrap();
        let back = image::open(&p).unwrap().to_rgb8();
        assert_eq!(back, img);
        assert!(!dir.path().join("a/b.png.tmp").exists());
    }
}
