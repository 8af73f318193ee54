//! Tensors to pixels for the pictures of the `figures` crate: an input image with its
//! normalisation undone, and a map as row-major values on the host. Drawing (colour maps,
//! overlays, titled sheets) lives in `figures`, which does not depend on candle.

use candle_core::{Device, Tensor};
use image::{Rgb, RgbImage};

use crate::{RelevanceError, Result};

/// Undoes the input normalisation of one image (3, H, W): `u8 = round(255·(x·std + mean))`.
pub fn to_rgb_image(x: &Tensor, mean: [f32; 3], std: [f32; 3]) -> Result<RgbImage> {
    let (c, h, w) = x.dims3()?;
    if c != 3 {
        return Err(RelevanceError::Invalid(format!(
            "expected a (3, H, W) image, got {:?}",
            x.dims()
        )));
    }
    let v: Vec<f32> = x
        .to_device(&Device::Cpu)?
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    let plane = h * w;
    let mut out = RgbImage::new(w as u32, h as u32);
    for (i, p) in out.pixels_mut().enumerate() {
        *p = Rgb([0, 1, 2].map(|ch| {
            let x = v[ch * plane + i] * std[ch] + mean[ch];
            (x * 255.0).round().clamp(0.0, 255.0) as u8
        }));
    }
    Ok(out)
}

/// A map of one image ((1, H, W), (H, W) or (1, 1, H, W)) as row-major values on the host.
pub fn map_values(map: &Tensor) -> Result<Vec<f32>> {
    Ok(map
        .to_device(&Device::Cpu)?
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denormalise() {
        let x = Tensor::from_vec(
            vec![-1.0f32, 1.0, 0.0, 0.5, 0.2, -0.2],
            (3, 1, 2),
            &Device::Cpu,
        )
        .unwrap();
        let img = to_rgb_image(&x, [0.5; 3], [0.5; 3]).unwrap();
        assert_eq!(img.get_pixel(0, 0).0, [0, 128, 153]);
        assert_eq!(img.get_pixel(1, 0).0, [255, 191, 102]);
        assert!(to_rgb_image(&x.narrow(0, 0, 2).unwrap(), [0.5; 3], [0.5; 3]).is_err());
    }

    #[test]
    fn map_values_flattens_any_single_image_shape() {
        let m = Tensor::from_vec(vec![0.0f32, 0.5, 1.0, 0.25], (1, 1, 2, 2), &Device::Cpu).unwrap();
        assert_eq!(map_values(&m).unwrap(), [0.0, 0.5, 1.0, 0.25]);
        assert_eq!(
            map_values(&m.squeeze(0).unwrap()).unwrap(),
            [0.0, 0.5, 1.0, 0.25]
        );
    }
}
