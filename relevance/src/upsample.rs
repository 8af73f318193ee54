//! Differentiable bilinear upsampling with PyTorch's `align_corners=False` weights.
//!
//! candle's `upsample_bilinear2d` has no backward pass, but bilinear interpolation is linear and
//! separable: `up = A_h · grid · A_wᵀ` with fixed interpolation matrices. Two small matrix
//! products keep the relevance map differentiable and cost next to nothing.

use candle_core::{Device, Tensor};

use crate::{RelevanceError, Result};

/// The (`output` × `input`) matrix of PyTorch's 1-D linear interpolation with
/// `align_corners=False` and no antialiasing: row `d` holds the weights of output sample `d`.
///
/// `scale_factor` is what `F.interpolate(scale_factor=...)` receives; PyTorch then samples at
/// `(d + 0.5) / scale_factor - 0.5`, otherwise at `(d + 0.5) * input / output - 0.5`. Source
/// coordinates below 0 are clamped to 0 and the right neighbour is clamped to the last sample.
/// The arithmetic is done in `f32`, as PyTorch does for `float` tensors.
pub fn interpolation_matrix(input: usize, output: usize, scale_factor: Option<f64>) -> Vec<f32> {
    let mut m = vec![0f32; output * input];
    if input == output {
        for d in 0..output {
            m[d * input + d] = 1.0;
        }
        return m;
    }
    let ratio = match scale_factor {
        Some(s) if s > 0.0 => (1.0 / s) as f32,
        _ => input as f32 / output as f32,
    };
    for d in 0..output {
        let src = (ratio * (d as f32 + 0.5) - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(input - 1);
        let l1 = (src - i0 as f32).clamp(0.0, 1.0);
        let l0 = 1.0 - l1;
        let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
        m[d * input + i0] += l0;
        m[d * input + i1] += l1;
    }
    m
}

/// Upsamples (B, 1, h, w) or (B, h, w) maps to (B, 1, H, W), differentiably.
#[derive(Clone, Debug)]
pub struct Upsampler {
    in_hw: (usize, usize),
    out_hw: (usize, usize),
    /// (H × h)
    rows: Tensor,
    /// (w × W): `A_wᵀ`, stored contiguous so that every matmul operand is contiguous.
    cols_t: Tensor,
}

impl Upsampler {
    /// Size-based interpolation, as `F.interpolate(size=(H, W))`.
    pub fn new(in_hw: (usize, usize), out_hw: (usize, usize), device: &Device) -> Result<Self> {
        Self::build(in_hw, out_hw, None, device)
    }

    /// Integer scale factor, as `F.interpolate(scale_factor=s)` in the reference code
    /// (`s` = patch size). For integer factors this equals the size-based form.
    pub fn with_scale(in_hw: (usize, usize), scale: usize, device: &Device) -> Result<Self> {
        let out_hw = (in_hw.0 * scale, in_hw.1 * scale);
        Self::build(in_hw, out_hw, Some(scale as f64), device)
    }

    fn build(
        in_hw: (usize, usize),
        out_hw: (usize, usize),
        scale: Option<f64>,
        device: &Device,
    ) -> Result<Self> {
        if in_hw.0 == 0 || in_hw.1 == 0 || out_hw.0 == 0 || out_hw.1 == 0 {
            return Err(RelevanceError::Invalid(format!(
                "cannot upsample {in_hw:?} to {out_hw:?}: empty size"
            )));
        }
        let rows = Tensor::from_vec(
            interpolation_matrix(in_hw.0, out_hw.0, scale),
            (out_hw.0, in_hw.0),
            device,
        )?;
        let cols = Tensor::from_vec(
            interpolation_matrix(in_hw.1, out_hw.1, scale),
            (out_hw.1, in_hw.1),
            device,
        )?;
        Ok(Self {
            in_hw,
            out_hw,
            rows,
            cols_t: cols.t()?.contiguous()?,
        })
    }

    /// The (H × h) row interpolation matrix.
    pub fn row_matrix(&self) -> &Tensor {
        &self.rows
    }

    pub fn output_size(&self) -> (usize, usize) {
        self.out_hw
    }

    /// `A_h · x_b · A_wᵀ` for every map of the batch; gradients flow to `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (h, w) = self.in_hw;
        let (oh, ow) = self.out_hw;
        let b = match x.dims() {
            [b, 1, hh, ww] | [b, hh, ww] if (*hh, *ww) == (h, w) => *b,
            d => {
                return Err(RelevanceError::Invalid(format!(
                    "upsampler expects maps of shape (B, 1, {h}, {w}) or (B, {h}, {w}), got {d:?}"
                )))
            }
        };
        // (B·h, w) · (w, W) → (B, h, W)
        let t = x
            .contiguous()?
            .reshape((b * h, w))?
            .matmul(&self.cols_t)?
            .reshape((b, h, ow))?;
        // (B, H, h) · (B, h, W) → (B, H, W); the constant is materialised per batch entry so
        // that cuBLAS gets plain contiguous operands.
        let rows = self
            .rows
            .unsqueeze(0)?
            .broadcast_as((b, oh, h))?
            .contiguous()?;
        Ok(rows.matmul(&t)?.reshape((b, 1, oh, ow))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_match_pytorch_by_hand() {
        // 2 → 4: samples at -0.25 (clamped to 0), 0.25, 0.75, 1.25 (right neighbour clamped).
        let m = interpolation_matrix(2, 4, None);
        let want = [1.0, 0.0, 0.75, 0.25, 0.25, 0.75, 0.0, 1.0];
        assert_eq!(m, want);
        // Every row sums to one, also for a non-integer ratio.
        let m = interpolation_matrix(5, 7, None);
        for r in m.chunks(5) {
            assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        // Downsampling with the identity size is the identity.
        assert_eq!(
            interpolation_matrix(3, 3, None),
            [1., 0., 0., 0., 1., 0., 0., 0., 1.]
        );
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    fn grid(b: usize, h: usize, w: usize) -> Tensor {
        let v: Vec<f32> = (0..b * h * w)
            .map(|i| ((i * 7919) % 101) as f32 / 17.0 - 2.0)
            .collect();
        Tensor::from_vec(v, (b, 1, h, w), &Device::Cpu).unwrap()
    }

    #[test]
    fn equals_candle_upsample_forward() {
        let dev = Device::Cpu;
        // (input h, w) → (output h, w): integer factors, the ViT-B/16 case, odd and unequal
        // ratios, and a downsampling.
        for ((h, w), (oh, ow)) in [
            ((2, 2), (8, 8)),
            ((4, 4), (32, 32)),
            ((14, 14), (224, 224)),
            ((3, 5), (7, 11)),
            ((7, 4), (16, 9)),
            ((6, 6), (4, 4)),
        ] {
            let x = grid(3, h, w);
            let ours = Upsampler::new((h, w), (oh, ow), &dev)
                .unwrap()
                .forward(&x)
                .unwrap();
            let theirs = x.upsample_bilinear2d(oh, ow, false).unwrap();
            let d = max_diff(&ours, &theirs);
            assert!(d < 2e-6, "{h}x{w} -> {oh}x{ow}: {d}");
        }
        // Scale-factor form (what the reference calls).
        for (h, s) in [(4usize, 8usize), (14, 16), (3, 5)] {
            let x = grid(2, h, h);
            let ours = Upsampler::with_scale((h, h), s, &dev)
                .unwrap()
                .forward(&x)
                .unwrap();
            let theirs = x
                .upsample_bilinear2d_with_scale(s as f64, s as f64, false)
                .unwrap();
            let d = max_diff(&ours, &theirs);
            assert!(d < 2e-6, "{h} x{s}: {d}");
        }
    }

    #[test]
    fn is_differentiable() {
        let x = candle_core::Var::from_tensor(&grid(2, 3, 3)).unwrap();
        let up = Upsampler::new((3, 3), (12, 12), &Device::Cpu).unwrap();
        let y = up.forward(x.as_tensor()).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        let g = g.get(x.as_tensor()).unwrap();
        // Rows of both matrices sum to 1, so each output pixel spreads a total weight of 1:
        // the gradient of the sum over a (3 → 12)² upsampling adds up to 144 per image.
        let total: f32 = g.sum_all().unwrap().to_scalar().unwrap();
        assert!((total - 2.0 * 144.0).abs() < 1e-3, "{total}");
    }
}
