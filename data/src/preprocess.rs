//! Pixel preprocessing that reproduces PIL + torchvision.
//!
//! Accuracy moves by points with a different resize or crop, so every step copies the reference:
//! PIL's antialiased convolution resize (a bit-exact port of Pillow's `Resample.c`, see
//! `pil_resize`), torchvision's output-size and centre-crop rounding, and PyTorch's
//! non-antialiased tensor interpolation for masks.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageReader, RgbImage};

use crate::error::{DataError, Result};
use crate::pil_resize;

/// Resampling filter of a PIL resize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// PIL `BILINEAR` (triangle filter, antialiased when downscaling).
    Bilinear,
    /// PIL `BICUBIC` (a = -0.5, antialiased when downscaling).
    Bicubic,
}

impl Interpolation {
    /// Parse the names used in timm/HF configs (`bilinear`, `bicubic`).
    pub fn from_name(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "bilinear" => Ok(Self::Bilinear),
            "bicubic" => Ok(Self::Bicubic),
            other => Err(DataError::Invalid(format!(
                "interpolation {other:?} is not supported: use \"bilinear\" or \"bicubic\""
            ))),
        }
    }

    fn filter(self) -> pil_resize::Filter {
        match self {
            Self::Bilinear => pil_resize::Filter::Bilinear,
            Self::Bicubic => pil_resize::Filter::Bicubic,
        }
    }
}

/// Per-channel mean/std applied after scaling pixels to [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalization {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalization {
    /// mean = std = 0.5: what RobustViT feeds every model, DeiT included.
    pub const HALF: Self = Self {
        mean: [0.5; 3],
        std: [0.5; 3],
    };
    /// The ImageNet statistics DeiT was trained with.
    pub const IMAGENET: Self = Self {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
}

// ------------------------------------------------------------------------------------------------
// Decoding

/// Decode an image file to RGB8 as PIL's `Image.open(p).convert('RGB')` does.
pub fn decode_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_rgb_bytes(&bytes, path)
}

/// Decode in-memory bytes; `path` only names the file in errors. The format is sniffed from the
/// content because ImageNet ships a few PNG and CMYK files under `.JPEG` names.
pub fn decode_rgb_bytes(bytes: &[u8], path: &Path) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(DataError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?;
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_is_complete(bytes) {
        // PIL refuses such files ("image file is truncated"); zune-jpeg would grey-fill them.
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
        });
    }
    let img = reader.decode().map_err(|e| DataError::Decode {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(to_rgb_like_pil(img))
}

/// `convert('RGB')` semantics: alpha is dropped (not composited), 16-bit colour keeps its high
/// byte and 16-bit grey is clipped at 255, as PIL's `RGB;16B` and `I;16` paths do.
pub fn to_rgb_like_pil(img: DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(i) => i,
        DynamicImage::ImageLuma16(i) => {
            let (w, h) = i.dimensions();
            let raw: Vec<u8> = i
                .into_raw()
                .into_iter()
                .flat_map(|v| [v.min(255) as u8; 3])
                .collect();
            RgbImage::from_raw(w, h, raw).expect("buffer size")
        }
        DynamicImage::ImageLumaA16(i) => {
            let (w, h) = i.dimensions();
            let raw: Vec<u8> = i
                .into_raw()
                .chunks_exact(2)
                .flat_map(|p| [(p[0] >> 8) as u8; 3])
                .collect();
            RgbImage::from_raw(w, h, raw).expect("buffer size")
        }
        DynamicImage::ImageRgb16(i) => {
            let (w, h) = i.dimensions();
            let raw: Vec<u8> = i.into_raw().into_iter().map(|v| (v >> 8) as u8).collect();
            RgbImage::from_raw(w, h, raw).expect("buffer size")
        }
        DynamicImage::ImageRgba16(i) => {
            let (w, h) = i.dimensions();
            let raw: Vec<u8> = i
                .into_raw()
                .chunks_exact(4)
                .flat_map(|p| [(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8])
                .collect();
            RgbImage::from_raw(w, h, raw).expect("buffer size")
        }
        // L8, LA8, RGBA8: replicate grey / drop alpha, which is what `to_rgb8` does.
        other => other.to_rgb8(),
    }
}

/// Walk the JPEG marker structure and report whether an end-of-image marker is reached, i.e.
/// whether the file was written completely.
pub fn jpeg_is_complete(b: &[u8]) -> bool {
    let n = b.len();
    if n < 4 || b[0] != 0xFF || b[1] != 0xD8 {
        return false;
    }
    let mut i = 2;
    loop {
        while i < n && b[i] != 0xFF {
            i += 1;
        }
        while i < n && b[i] == 0xFF {
            i += 1;
        }
        if i >= n {
            return false;
        }
        let marker = b[i];
        i += 1;
        match marker {
            0xD9 => return true,
            0x01 | 0xD0..=0xD7 => continue,
            _ => {
                if i + 2 > n {
                    return false;
                }
                let len = u16::from_be_bytes([b[i], b[i + 1]]) as usize;
                i += len;
                if i > n {
                    return false;
                }
                if marker == 0xDA {
                    // Entropy-coded data: skip stuffed bytes (FF 00), restarts and fill bytes.
                    while i + 1 < n {
                        if b[i] == 0xFF {
                            let nx = b[i + 1];
                            if nx == 0x00 || (0xD0..=0xD7).contains(&nx) {
                                i += 2;
                                continue;
                            }
                            if nx == 0xFF {
                                i += 1;
                                continue;
                            }
                            break;
                        }
                        i += 1;
                    }
                    if i + 1 >= n {
                        return false;
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Geometry

/// torchvision `Resize(size)` output for a `w`x`h` image: shorter side = `size`, longer side
/// `int(size * long / short)` (truncated).
pub fn shorter_side_size(w: u32, h: u32, size: u32) -> (u32, u32) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = ((size as u64 * long as u64) as f64 / short as f64) as u32;
    if w <= h {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// Python `round(x / 2)` for an integer x (round half to even), as torchvision's centre crop.
fn half_round_even(x: i64) -> i64 {
    let q = x.div_euclid(2);
    // Exact halves (odd x) go to the even neighbour.
    if x.rem_euclid(2) == 1 && q % 2 != 0 {
        q + 1
    } else {
        q
    }
}

/// torchvision `CenterCrop` offsets (left, top) for an image that is at least as large as the crop.
pub fn center_crop_offsets(w: u32, h: u32, cw: u32, ch: u32) -> (u32, u32) {
    (
        half_round_even(w as i64 - cw as i64).max(0) as u32,
        half_round_even(h as i64 - ch as i64).max(0) as u32,
    )
}

/// torchvision padding (left, top) applied when the image is smaller than the crop.
fn center_crop_padding(w: u32, h: u32, cw: u32, ch: u32) -> (u32, u32) {
    (
        if cw > w { (cw - w) / 2 } else { 0 },
        if ch > h { (ch - h) / 2 } else { 0 },
    )
}

/// PIL `Image.resize((w, h), filter)`: antialiased convolution, bit-exact with Pillow.
pub fn resize_exact(img: &RgbImage, w: u32, h: u32, interp: Interpolation) -> RgbImage {
    resize_region(img, w, h, interp, (0, 0, w, h))
}

/// The pixels `(left, top, width, height)` of `resize_exact(img, w, h)`, computing only those.
pub fn resize_region(
    img: &RgbImage,
    w: u32,
    h: u32,
    interp: Interpolation,
    region: (u32, u32, u32, u32),
) -> RgbImage {
    pil_resize::resize_region(img, w, h, interp.filter(), region)
}

/// torchvision `Resize(size, interpolation)` on a PIL image.
pub fn resize_shorter(img: &RgbImage, size: u32, interp: Interpolation) -> RgbImage {
    let (w, h) = shorter_side_size(img.width(), img.height(), size);
    resize_exact(img, w, h, interp)
}

/// torchvision `CenterCrop((ch, cw))`, zero-padding images smaller than the crop as it does.
pub fn center_crop(img: &RgbImage, cw: u32, ch: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (pl, pt) = center_crop_padding(w, h, cw, ch);
    let (pw, ph) = (w.max(cw), h.max(ch));
    let (left, top) = center_crop_offsets(pw, ph, cw, ch);
    let mut out = RgbImage::new(cw, ch);
    for y in 0..ch {
        let sy = (y + top) as i64 - pt as i64;
        if sy < 0 || sy >= h as i64 {
            continue;
        }
        for x in 0..cw {
            let sx = (x + left) as i64 - pl as i64;
            if sx < 0 || sx >= w as i64 {
                continue;
            }
            out.put_pixel(x, y, *img.get_pixel(sx as u32, sy as u32));
        }
    }
    out
}

/// Cut `border` pixels from every side (ObjectNet's red frame), as `PIL.ImageOps.crop`.
pub fn crop_border(img: &RgbImage, border: u32) -> RgbImage {
    if border == 0 || img.width() <= 2 * border || img.height() <= 2 * border {
        return img.clone();
    }
    image::imageops::crop_imm(
        img,
        border,
        border,
        img.width() - 2 * border,
        img.height() - 2 * border,
    )
    .to_image()
}

/// Crop a rectangle (must lie inside the image).
pub fn crop(img: &RgbImage, left: u32, top: u32, w: u32, h: u32) -> RgbImage {
    image::imageops::crop_imm(img, left, top, w, h).to_image()
}

/// `ToTensor` + `Normalize`: CHW f32, `(v / 255 - mean) / std` in f32 like torchvision.
pub fn to_chw(img: &RgbImage, norm: &Normalization) -> Vec<f32> {
    let (w, h) = img.dimensions();
    let hw = (w * h) as usize;
    let mut out = vec![0f32; 3 * hw];
    let (r, rest) = out.split_at_mut(hw);
    let (g, b) = rest.split_at_mut(hw);
    for (i, p) in img.as_raw().chunks_exact(3).enumerate() {
        r[i] = (p[0] as f32 / 255.0 - norm.mean[0]) / norm.std[0];
        g[i] = (p[1] as f32 / 255.0 - norm.mean[1]) / norm.std[1];
        b[i] = (p[2] as f32 / 255.0 - norm.mean[2]) / norm.std[2];
    }
    out
}

/// Evaluation transform: optional border crop, shorter-side resize, centre crop, normalise.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalTransform {
    /// Shorter side after resize.
    pub resize: u32,
    /// Square centre-crop size.
    pub crop: u32,
    pub interpolation: Interpolation,
    pub norm: Normalization,
    /// Pixels cut from every side before resizing (2 for ObjectNet's official protocol).
    pub border: u32,
}

impl EvalTransform {
    /// RobustViT's evaluation transform for every model: Resize(256) bilinear, CenterCrop(224),
    /// mean = std = 0.5.
    pub const PAPER: Self = Self {
        resize: 256,
        crop: 224,
        interpolation: Interpolation::Bilinear,
        norm: Normalization::HALF,
        border: 0,
    };

    /// timm's evaluation transform: Resize(floor(img_size / crop_pct)), CenterCrop(img_size).
    pub fn timm(
        img_size: u32,
        crop_pct: f64,
        interpolation: Interpolation,
        norm: Normalization,
    ) -> Self {
        Self {
            resize: (img_size as f64 / crop_pct).floor() as u32,
            crop: img_size,
            interpolation,
            norm,
            border: 0,
        }
    }

    pub fn with_border(mut self, border: u32) -> Self {
        self.border = border;
        self
    }

    /// The 8-bit image just before `ToTensor`.
    pub fn apply_u8(&self, img: &RgbImage) -> RgbImage {
        let bordered;
        let img = if self.border > 0 {
            bordered = crop_border(img, self.border);
            &bordered
        } else {
            img
        };
        let (w, h) = shorter_side_size(img.width(), img.height(), self.resize);
        if w >= self.crop && h >= self.crop {
            // Resize only the pixels the crop keeps: identical values, less work.
            let (left, top) = center_crop_offsets(w, h, self.crop, self.crop);
            resize_region(
                img,
                w,
                h,
                self.interpolation,
                (left, top, self.crop, self.crop),
            )
        } else {
            center_crop(
                &resize_exact(img, w, h, self.interpolation),
                self.crop,
                self.crop,
            )
        }
    }

    /// CHW f32 of shape (3, crop, crop).
    pub fn apply(&self, img: &RgbImage) -> Vec<f32> {
        to_chw(&self.apply_u8(img), &self.norm)
    }

    /// Decode + transform.
    pub fn load(&self, path: &Path) -> Result<Vec<f32>> {
        Ok(self.apply(&decode_rgb(path)?))
    }
}

/// The segmentation-test image transform: PIL bilinear to exactly `size`x`size`, then normalise.
pub fn segtest_transform(img: &RgbImage, size: u32, norm: &Normalization) -> Vec<f32> {
    to_chw(
        &resize_exact(img, size, size, Interpolation::Bilinear),
        norm,
    )
}

// ------------------------------------------------------------------------------------------------
// Single-channel float planes (masks), resized as PyTorch tensors, or as PIL for nearest

/// A single-channel f32 image (row-major), e.g. a binary or fractional mask.
#[derive(Debug, Clone, PartialEq)]
pub struct Plane {
    pub width: u32,
    pub height: u32,
    pub data: Vec<f32>,
}

/// Per-axis source indices and weights of PyTorch's bilinear kernel (align_corners=False).
fn linear_taps(input: u32, output: u32) -> Vec<(usize, usize, f32, f32)> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|d| {
            let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
            let i0 = src as usize;
            let i1 = if i0 + 1 < input as usize { i0 + 1 } else { i0 };
            let l1 = (src - i0 as f32).clamp(0.0, 1.0);
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// Source indices of PIL's NEAREST resize along one axis (Pillow `ImagingScaleAffine`): the
/// coordinate starts at `scale / 2` and `scale = in / out` is *added* once per output pixel in
/// double precision, then truncated. The running sum, not `(d + 0.5)·scale`, decides ties:
/// for 64 → 224, output 3 lands on 0.9999999999999999, so source 0, where the product gives
/// 1.0. The index is kept below `in` (PIL would leave a pixel past the edge black, which only
/// rounding over millions of pixels could reach).
fn pil_nearest_indices(input: u32, output: u32) -> Vec<usize> {
    let scale = f64::from(input) / f64::from(output);
    let mut x = scale * 0.5;
    (0..output)
        .map(|_| {
            let i = (x as usize).min(input as usize - 1);
            x += scale;
            i
        })
        .collect()
}

impl Plane {
    pub fn new(width: u32, height: u32, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), (width * height) as usize);
        Self {
            width,
            height,
            data,
        }
    }

    #[inline]
    pub fn at(&self, x: u32, y: u32) -> f32 {
        self.data[(y * self.width + x) as usize]
    }

    /// Tensor bilinear resize, align_corners=False, **no antialias** (torchvision 0.8 on tensors):
    /// edges stay fractional.
    pub fn resize_bilinear(&self, w: u32, h: u32) -> Plane {
        if (w, h) == (self.width, self.height) {
            return self.clone();
        }
        let xs = linear_taps(self.width, w);
        let ys = linear_taps(self.height, h);
        let sw = self.width as usize;
        let mut out = Vec::with_capacity((w * h) as usize);
        for &(y0, y1, wy0, wy1) in &ys {
            let r0 = &self.data[y0 * sw..(y0 + 1) * sw];
            let r1 = &self.data[y1 * sw..(y1 + 1) * sw];
            for &(x0, x1, wx0, wx1) in &xs {
                let t0 = r0[x0] * wx0 + r0[x1] * wx1;
                let t1 = r1[x0] * wx0 + r1[x1] * wx1;
                out.push(t0 * wy0 + t1 * wy1);
            }
        }
        Plane::new(w, h, out)
    }

    /// PIL's `resize((w, h), Image.NEAREST)`: output pixel d samples source pixel
    /// ≈ floor((d + 0.5)·in/out), exactly as Pillow rounds it (see `pil_nearest_indices`).
    /// The official segmentation test resizes its 0/1 ground truth this way, as an 8-bit PIL
    /// image; the official code never resizes a mask with torch's tensor rule
    /// (floor(d·in/out)), so that rule has no counterpart here.
    pub fn resize_nearest_pil(&self, w: u32, h: u32) -> Plane {
        let xs = pil_nearest_indices(self.width, w);
        let mut out = Vec::with_capacity(w as usize * h as usize);
        for sy in pil_nearest_indices(self.height, h) {
            let row = &self.data[sy * self.width as usize..(sy + 1) * self.width as usize];
            out.extend(xs.iter().map(|&sx| row[sx]));
        }
        Plane::new(w, h, out)
    }

    /// torchvision `Resize(size)` on a tensor (bilinear, no antialias).
    pub fn resize_shorter_bilinear(&self, size: u32) -> Plane {
        let (w, h) = shorter_side_size(self.width, self.height, size);
        self.resize_bilinear(w, h)
    }

    pub fn crop(&self, left: u32, top: u32, w: u32, h: u32) -> Plane {
        assert!(
            left + w <= self.width && top + h <= self.height,
            "crop outside the plane"
        );
        let mut out = Vec::with_capacity((w * h) as usize);
        for y in top..top + h {
            let s = (y * self.width + left) as usize;
            out.extend_from_slice(&self.data[s..s + w as usize]);
        }
        Plane::new(w, h, out)
    }

    /// torchvision `CenterCrop` (zero padding when smaller).
    pub fn center_crop(&self, cw: u32, ch: u32) -> Plane {
        let (pl, pt) = center_crop_padding(self.width, self.height, cw, ch);
        let (pw, ph) = (self.width.max(cw), self.height.max(ch));
        let (left, top) = center_crop_offsets(pw, ph, cw, ch);
        let mut out = vec![0f32; (cw * ch) as usize];
        for y in 0..ch {
            let sy = (y + top) as i64 - pt as i64;
            if sy < 0 || sy >= self.height as i64 {
                continue;
            }
            for x in 0..cw {
                let sx = (x + left) as i64 - pl as i64;
                if sx >= 0 && sx < self.width as i64 {
                    out[(y * cw + x) as usize] = self.at(sx as u32, sy as u32);
                }
            }
        }
        Plane::new(cw, ch, out)
    }

    pub fn flip_horizontal(&self) -> Plane {
        let w = self.width as usize;
        let mut out = self.data.clone();
        for row in out.chunks_exact_mut(w) {
            row.reverse();
        }
        Plane::new(self.width, self.height, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchvision_geometry() {
        // Resize(256) of a 500x375 ImageNet photo: 256 * 500 / 375 = 341.33 -> 341.
        assert_eq!(shorter_side_size(500, 375, 256), (341, 256));
        assert_eq!(shorter_side_size(375, 500, 256), (256, 341));
        assert_eq!(shorter_side_size(451, 300, 256), (384, 256));
        // round(33/2) = round(16.5) = 16 (half to even); round(35/2) = round(17.5) = 18.
        assert_eq!(center_crop_offsets(257, 259, 224, 224), (16, 18));
        assert_eq!(center_crop_offsets(341, 256, 224, 224), (58, 16));
        assert_eq!(half_round_even(1), 0);
        assert_eq!(half_round_even(3), 2);
        assert_eq!(half_round_even(5), 2);
    }

    #[test]
    fn small_images_are_padded_like_torchvision() {
        let img = RgbImage::from_pixel(3, 2, image::Rgb([9, 9, 9]));
        let out = center_crop(&img, 6, 5);
        // pad left (6-3)//2 = 1, top (5-2)//2 = 1.
        assert_eq!(out.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(1, 1).0, [9, 9, 9]);
        assert_eq!(out.get_pixel(3, 2).0, [9, 9, 9]);
        assert_eq!(out.get_pixel(4, 2).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(1, 3).0, [0, 0, 0]);
    }

    #[test]
    fn tensor_bilinear_matches_hand_values() {
        // 2 -> 4 upsampling of [0, 1]: src = (d + 0.5)/2 - 0.5 = -0.25 (clamped), 0.25, 0.75, 1.25.
        let p = Plane::new(2, 1, vec![0.0, 1.0]);
        let r = p.resize_bilinear(4, 1);
        assert_eq!(r.data, vec![0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn pil_nearest_indices_match_hand_values() {
        // 5 → 3: scale 5/3, coordinates 5/6, 15/6, 25/6 → 0, 2, 4 (torch's floor(d·5/3): 0, 1, 3).
        assert_eq!(pil_nearest_indices(5, 3), vec![0, 2, 4]);
        // 3 → 5: scale 0.6, coordinates 0.3, 0.9, 1.5, 2.1, 2.7 (torch: 0, 0, 1, 1, 2).
        assert_eq!(pil_nearest_indices(3, 5), vec![0, 0, 1, 2, 2]);
        // 7 → 224: scale 1/32 is exact, so each source pixel covers 32 outputs.
        let up = pil_nearest_indices(7, 224);
        assert_eq!(up, (0..224).map(|d| d / 32).collect::<Vec<_>>());
        // 500 → 224: scale 2.232142857…: (d + 0.5)·scale = 1.12, 3.35, 5.58, 7.81, 10.04, 12.28
        // at the start, 494.20, 496.43, 498.66 at the end.
        let down = pil_nearest_indices(500, 224);
        assert_eq!(&down[..6], &[1, 3, 5, 7, 10, 12]);
        assert_eq!(&down[221..], &[494, 496, 498]);
        // Same size is the identity.
        assert_eq!(pil_nearest_indices(4, 4), vec![0, 1, 2, 3]);
        // 64 → 224: scale 2/7; the running sum reaches 0.9999999999999999 at d = 3, so PIL
        // samples source 0 there although (3 + 0.5)·2/7 = 1 (likewise at d = 10, 17, 24).
        let tie = pil_nearest_indices(64, 224);
        assert_eq!([2, 3, 4, 10, 17, 24].map(|d| tie[d]), [0, 0, 1, 2, 4, 6]);
    }

    #[test]
    fn pil_nearest_resize_picks_rows_and_columns() {
        // 3×2 plane of value 10·y + x, resized to 2×3: columns [0, 2] (scale 1.5: 0.75, 2.25),
        // rows [0, 1, 1] (scale 2/3: 0.33, 1.0, 1.67).
        let p = Plane::new(3, 2, vec![0.0, 1.0, 2.0, 10.0, 11.0, 12.0]);
        let r = p.resize_nearest_pil(2, 3);
        assert_eq!((r.width, r.height), (2, 3));
        assert_eq!(r.data, vec![0.0, 2.0, 10.0, 12.0, 10.0, 12.0]);
    }

    #[test]
    fn region_resize_equals_full_resize_then_crop() {
        let img = RgbImage::from_fn(97, 61, |x, y| {
            image::Rgb([
                (x * 37 % 256) as u8,
                (y * 53 % 256) as u8,
                ((x * y) % 251) as u8,
            ])
        });
        for interp in [Interpolation::Bilinear, Interpolation::Bicubic] {
            for (w, h) in [(40, 30), (150, 90), (97, 30), (40, 61)] {
                let full = resize_exact(&img, w, h, interp);
                let part = resize_region(&img, w, h, interp, (5, 7, w - 11, h - 9));
                assert_eq!(part, crop(&full, 5, 7, w - 11, h - 9), "{interp:?} {w}x{h}");
            }
        }
    }

    #[test]
    fn normalisation_is_torchvision_f32() {
        let img = RgbImage::from_pixel(1, 1, image::Rgb([0, 255, 128]));
        let t = to_chw(&img, &Normalization::HALF);
        assert_eq!(t, vec![-1.0, 1.0, (128f32 / 255.0 - 0.5) / 0.5]);
    }

    #[test]
    fn pil_conversions() {
        let l16 =
            image::ImageBuffer::<image::Luma<u16>, _>::from_raw(2, 1, vec![100u16, 3000]).unwrap();
        let rgb = to_rgb_like_pil(DynamicImage::ImageLuma16(l16));
        assert_eq!(rgb.as_raw(), &vec![100, 100, 100, 255, 255, 255]);
        let rgba = image::RgbaImage::from_raw(1, 1, vec![10, 20, 30, 0]).unwrap();
        assert_eq!(
            to_rgb_like_pil(DynamicImage::ImageRgba8(rgba)).as_raw(),
            &vec![10, 20, 30]
        );
    }

    #[test]
    fn jpeg_completeness() {
        let img = RgbImage::from_fn(32, 24, |x, y| image::Rgb([x as u8 * 7, y as u8 * 9, 100]));
        let mut buf = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 90)
            .encode_image(&img)
            .unwrap();
        assert!(jpeg_is_complete(&buf));
        let mut padded = buf.clone();
        padded.extend_from_slice(&[0, 0, 0]);
        assert!(jpeg_is_complete(&padded));
        assert!(!jpeg_is_complete(&buf[..buf.len() / 2]));
        assert!(!jpeg_is_complete(&buf[..buf.len() - 2]));
        let p = Path::new("x.jpg");
        assert!(matches!(
            decode_rgb_bytes(&buf[..buf.len() / 2], p),
            Err(DataError::Truncated { .. })
        ));
        assert!(matches!(
            decode_rgb_bytes(&[], p),
            Err(DataError::EmptyFile { .. })
        ));
    }
}
