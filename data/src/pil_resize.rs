//! A port of Pillow's `Resample.c` for 8-bit RGB.
//!
//! `fast_image_resize` implements Pillow's filters but runs the vertical pass first for 8-bit
//! images and quantises coefficients to 16 bits (Pillow-SIMD style). Both change results: up to
//! 6 grey levels for bicubic on high-contrast photographs, and a 1-level difference in ~20% of
//! pixels for bilinear. Pillow itself runs the horizontal pass first, rounds to 8 bits in between,
//! and uses 22-bit fixed-point coefficients; this port does exactly that and so reproduces PIL
//! bit for bit. It also computes only the pixels a later crop keeps, which makes it faster than
//! resizing the whole image.

use image::RgbImage;

const PRECISION_BITS: u32 = 32 - 8 - 2;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Filter {
    Bilinear,
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    fn eval(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// Fixed-point coefficients of one axis: for output i, taps `kk[i*ksize .. i*ksize + len]`
/// applied to source pixels `start .. start + len`.
struct Coeffs {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    kk: Vec<i32>,
}

/// `precompute_coeffs` + `normalize_coeffs_8bpc` for the box (0, in_size).
fn coeffs(in_size: u32, out_size: u32, filter: Filter) -> Coeffs {
    // Pillow computes (in1 - in0) in float; exact for image sizes.
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size as usize);
    let mut kk = vec![0i32; ksize * out_size as usize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size as usize {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let len = xmax.saturating_sub(xmin);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(len) {
            let w = filter.eval(((x + xmin) as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        let out = &mut kk[xx * ksize..xx * ksize + len];
        for (o, &w) in out.iter_mut().zip(&k[..len]) {
            let w = if ww != 0.0 { w / ww } else { w };
            let f = w * (1u32 << PRECISION_BITS) as f64;
            *o = if w < 0.0 {
                (f - 0.5) as i32
            } else {
                (f + 0.5) as i32
            };
        }
        bounds.push((xmin, len));
    }
    Coeffs { ksize, bounds, kk }
}

#[inline(always)]
fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Pixels `[x0, x0+w) x [y0, y0+h)` of PIL's `img.resize((out_w, out_h), filter)`.
pub(crate) fn resize_region(
    img: &RgbImage,
    out_w: u32,
    out_h: u32,
    filter: Filter,
    region: (u32, u32, u32, u32),
) -> RgbImage {
    let (in_w, in_h) = img.dimensions();
    let (x0, y0, w, h) = region;
    assert!(
        x0 + w <= out_w && y0 + h <= out_h,
        "region outside the output"
    );
    let src = img.as_raw();
    let need_h = out_w != in_w;
    let need_v = out_h != in_h;
    let vc = need_v.then(|| coeffs(in_h, out_h, filter));
    // Source rows the vertical pass reads (or the output rows themselves without one).
    let (row_first, row_last) = match &vc {
        Some(c) if h > 0 => {
            let a = c.bounds[y0 as usize].0;
            let last = c.bounds[(y0 + h - 1) as usize];
            (a, last.0 + last.1)
        }
        _ => (y0 as usize, (y0 + h) as usize),
    };
    let rows = row_last - row_first;
    let in_stride = in_w as usize * 3;

    // Horizontal pass into an 8-bit temporary, rows [row_first, row_last), columns [x0, x0+w).
    let (tmp, tmp_w) = if need_h {
        let hc = coeffs(in_w, out_w, filter);
        let mut tmp = vec![0u8; rows * w as usize * 3];
        for (r, out_row) in tmp.chunks_exact_mut(w as usize * 3).enumerate() {
            let src_row = &src[(row_first + r) * in_stride..(row_first + r + 1) * in_stride];
            for (i, px) in out_row.chunks_exact_mut(3).enumerate() {
                let xx = x0 as usize + i;
                let (xmin, len) = hc.bounds[xx];
                let k = &hc.kk[xx * hc.ksize..xx * hc.ksize + len];
                let s = &src_row[xmin * 3..(xmin + len) * 3];
                let half = 1i32 << (PRECISION_BITS - 1);
                let (mut s0, mut s1, mut s2) = (half, half, half);
                for (p, &kx) in s.chunks_exact(3).zip(k) {
                    s0 += p[0] as i32 * kx;
                    s1 += p[1] as i32 * kx;
                    s2 += p[2] as i32 * kx;
                }
                px[0] = clip8(s0);
                px[1] = clip8(s1);
                px[2] = clip8(s2);
            }
        }
        (tmp, w as usize)
    } else {
        let mut tmp = Vec::with_capacity(rows * w as usize * 3);
        for r in row_first..row_last {
            let s = r * in_stride + x0 as usize * 3;
            tmp.extend_from_slice(&src[s..s + w as usize * 3]);
        }
        (tmp, w as usize)
    };

    let Some(vc) = vc else {
        return RgbImage::from_raw(w, h, tmp).expect("buffer size");
    };
    // Vertical pass.
    let stride = tmp_w * 3;
    let mut out = vec![0u8; (w * h) as usize * 3];
    let half = 1i32 << (PRECISION_BITS - 1);
    let mut acc = vec![0i32; stride];
    for (j, out_row) in out.chunks_exact_mut(stride).enumerate() {
        let yy = y0 as usize + j;
        let (ymin, len) = vc.bounds[yy];
        let k = &vc.kk[yy * vc.ksize..yy * vc.ksize + len];
        acc.fill(half);
        for (t, &ky) in k.iter().enumerate() {
            let r = ymin + t - row_first;
            let row = &tmp[r * stride..(r + 1) * stride];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += p as i32 * ky;
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    RgbImage::from_raw(w, h, out).expect("buffer size")
}
