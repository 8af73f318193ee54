//! Grouped bar chart (accuracy per dataset, one bar per model state) as a PNG.
//!
//! Drawn directly on an [`image::RgbImage`] with a built-in 5×7 pixel font, so the
//! output needs no system font, no font file and no extra crate, and is byte-identical
//! across machines. The font has upper-case letters, digits and common punctuation;
//! lower-case text is drawn in capitals.

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use thiserror::Error;

/// Why a chart could not be drawn or saved.
#[derive(Debug, Error)]
pub enum ChartError {
    #[error("chart has no group to draw")]
    NoGroups,
    #[error("chart has no series (e.g. `original`, `finetuned`) to draw")]
    NoSeries,
    #[error("group {group:?} has {got} values but the chart has {series} series; give one value per series (NaN for missing)")]
    ValueCount {
        group: String,
        got: usize,
        series: usize,
    },
    #[error("{width}×{height} px is too small for {groups} groups; use at least {min_width}×{min_height}")]
    TooSmall {
        width: u32,
        height: u32,
        groups: usize,
        min_width: u32,
        min_height: u32,
    },
    #[error("y axis maximum {0} must be a positive finite number")]
    YMax(f64),
    #[error("writing {}: {source}", .path.display())]
    Save {
        path: PathBuf,
        source: image::ImageError,
    },
}

/// One cluster of bars, e.g. one dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct BarGroup {
    pub label: String,
    /// One value per series; NaN draws no bar and prints `N/A`.
    pub values: Vec<f64>,
}

/// A grouped bar chart.
#[derive(Debug, Clone, PartialEq)]
pub struct BarChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Series names, shown in the legend (e.g. `original`, `finetuned`).
    pub series: Vec<String>,
    pub groups: Vec<BarGroup>,
    /// Top of the y axis; `None` picks a round number above the largest value.
    pub y_max: Option<f64>,
}

/// Series colours (matplotlib's first four), distinct from the black/grey of text and axes.
pub const PALETTE: [[u8; 3]; 4] = [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40]];

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);

const MARGIN_LEFT: u32 = 70;
const MARGIN_RIGHT: u32 = 20;
const MARGIN_TOP: u32 = 60;
const MARGIN_BOTTOM: u32 = 60;

/// Geometry of one bar slot, in pixels (rows `top..bottom`, columns `left..right`);
/// a missing (NaN) value has `top == bottom`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BarRect {
    pub group: usize,
    pub series: usize,
    pub value: f64,
    pub left: u32,
    pub right: u32,
    pub top: u32,
    pub bottom: u32,
}

/// Plot-area geometry shared by drawing and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Row of the x axis; bars end just above it.
    pub baseline: u32,
    /// Pixel height corresponding to `y_max`.
    pub plot_height: u32,
    pub y_max: f64,
    /// One slot per (group, series), group-major.
    pub bars: Vec<BarRect>,
}

/// Round axis top: the largest value rounded up to a multiple of [`tick_step`].
fn nice_max(max: f64) -> f64 {
    if !max.is_finite() || max <= 0.0 {
        return 1.0;
    }
    let step = tick_step(max);
    (max / step).ceil() * step
}

/// Smallest 1, 2, 2.5 or 5·10^k step giving at most 5 intervals up to `y_max`.
fn tick_step(y_max: f64) -> f64 {
    let raw = y_max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw - 1e-9 * raw)
        .unwrap_or(10.0 * mag)
}

impl BarChart {
    /// Validates the chart and computes where every bar goes on a `width`×`height` canvas.
    ///
    /// A bar of value v is `round(v / y_max · plot_height)` pixels tall (clamped to the
    /// plot), so heights are proportional to values.
    pub fn layout(&self, width: u32, height: u32) -> Result<Layout, ChartError> {
        if self.series.is_empty() {
            return Err(ChartError::NoSeries);
        }
        if self.groups.is_empty() {
            return Err(ChartError::NoGroups);
        }
        for g in &self.groups {
            if g.values.len() != self.series.len() {
                return Err(ChartError::ValueCount {
                    group: g.label.clone(),
                    got: g.values.len(),
                    series: self.series.len(),
                });
            }
        }
        let n_groups = self.groups.len() as u32;
        let n_series = self.series.len() as u32;
        // At least 4 px per bar plus a 2-bar gap per group, and 40 px of plot height.
        let min_width = MARGIN_LEFT + MARGIN_RIGHT + n_groups * 4 * (n_series + 2);
        let min_height = MARGIN_TOP + MARGIN_BOTTOM + 40;
        if width < min_width || height < min_height {
            return Err(ChartError::TooSmall {
                width,
                height,
                groups: self.groups.len(),
                min_width,
                min_height,
            });
        }
        let y_max = match self.y_max {
            Some(m) if m.is_finite() && m > 0.0 => m,
            Some(m) => return Err(ChartError::YMax(m)),
            None => nice_max(
                self.groups
                    .iter()
                    .flat_map(|g| g.values.iter().copied())
                    .filter(|v| v.is_finite())
                    .fold(0.0, f64::max),
            ),
        };

        let baseline = height - MARGIN_BOTTOM;
        let plot_height = baseline - MARGIN_TOP;
        let plot_width = width - MARGIN_LEFT - MARGIN_RIGHT;
        let group_width = plot_width / n_groups;
        let bar_width = group_width / (n_series + 1);
        let pad = (group_width - bar_width * n_series) / 2;
        let mut bars = Vec::new();
        for (gi, g) in self.groups.iter().enumerate() {
            let gx = MARGIN_LEFT + gi as u32 * group_width + pad;
            for (si, &v) in g.values.iter().enumerate() {
                let h = if v.is_finite() {
                    ((v / y_max) * f64::from(plot_height))
                        .round()
                        .clamp(0.0, f64::from(plot_height)) as u32
                } else {
                    0
                };
                let left = gx + si as u32 * bar_width;
                bars.push(BarRect {
                    group: gi,
                    series: si,
                    value: v,
                    left,
                    right: left + bar_width,
                    top: baseline - h,
                    bottom: baseline,
                });
            }
        }
        Ok(Layout {
            baseline,
            plot_height,
            y_max,
            bars,
        })
    }

    /// Draws the chart.
    pub fn render(&self, width: u32, height: u32) -> Result<RgbImage, ChartError> {
        let layout = self.layout(width, height)?;
        let mut img = RgbImage::from_pixel(width, height, WHITE);
        let plot_right = width - MARGIN_RIGHT;

        // Grid and y ticks.
        let step = tick_step(layout.y_max);
        let mut k = 0u32;
        loop {
            let v = f64::from(k) * step;
            if v > layout.y_max * (1.0 + 1e-9) {
                break;
            }
            let y = layout.baseline
                - ((v / layout.y_max) * f64::from(layout.plot_height)).round() as u32;
            fill(&mut img, MARGIN_LEFT, plot_right, y, y + 1, GRID);
            fill(&mut img, MARGIN_LEFT - 4, MARGIN_LEFT, y, y + 1, BLACK);
            let label = format_tick(v, step);
            let tw = text_width(&label, 1);
            draw_text(
                &mut img,
                &label,
                MARGIN_LEFT - 6 - tw,
                y.saturating_sub(3),
                1,
                BLACK,
            );
            k += 1;
        }

        // Bars and their values (`N/A` in the empty slot of a missing value).
        for b in &layout.bars {
            let colour = Rgb(PALETTE[b.series % PALETTE.len()]);
            let label = if b.value.is_finite() {
                fill(&mut img, b.left, b.right, b.top, b.bottom, colour);
                format!("{:.1}", b.value)
            } else {
                "N/A".to_owned()
            };
            let tw = text_width(&label, 1);
            let cx = (b.left + b.right) / 2;
            draw_text(
                &mut img,
                &label,
                cx.saturating_sub(tw / 2),
                b.top.saturating_sub(10),
                1,
                BLACK,
            );
        }

        // Axes on top of the grid and bars.
        fill(
            &mut img,
            MARGIN_LEFT - 1,
            MARGIN_LEFT,
            MARGIN_TOP,
            layout.baseline + 1,
            BLACK,
        );
        fill(
            &mut img,
            MARGIN_LEFT - 1,
            plot_right,
            layout.baseline,
            layout.baseline + 1,
            BLACK,
        );

        // Group labels, axis labels, title, legend.
        let n_groups = self.groups.len() as u32;
        let group_width = (plot_right - MARGIN_LEFT) / n_groups;
        for (gi, g) in self.groups.iter().enumerate() {
            let cx = MARGIN_LEFT + gi as u32 * group_width + group_width / 2;
            let max_chars = (group_width / 6).max(1) as usize;
            let label: String = g.label.chars().take(max_chars).collect();
            let tw = text_width(&label, 1);
            draw_text(
                &mut img,
                &label,
                cx.saturating_sub(tw / 2),
                layout.baseline + 8,
                1,
                BLACK,
            );
        }
        let tw = text_width(&self.x_label, 2);
        let cx = (MARGIN_LEFT + plot_right) / 2;
        draw_text(
            &mut img,
            &self.x_label,
            cx.saturating_sub(tw / 2),
            height - 24,
            2,
            BLACK,
        );
        let th = text_width(&self.y_label, 2);
        let cy = (MARGIN_TOP + layout.baseline) / 2;
        draw_text_vertical(&mut img, &self.y_label, 8, cy + th / 2, 2, BLACK);
        let tw = text_width(&self.title, 2);
        draw_text(
            &mut img,
            &self.title,
            (width / 2).saturating_sub(tw / 2),
            10,
            2,
            BLACK,
        );

        let mut x = MARGIN_LEFT + 4;
        for (si, name) in self.series.iter().enumerate() {
            let colour = Rgb(PALETTE[si % PALETTE.len()]);
            fill(&mut img, x, x + 10, 36, 46, colour);
            draw_text(&mut img, name, x + 14, 38, 1, BLACK);
            x += 14 + text_width(name, 1) + 16;
        }
        Ok(img)
    }

    /// Draws the chart and writes it as a PNG.
    pub fn save_png(&self, path: &Path, width: u32, height: u32) -> Result<(), ChartError> {
        let img = self.render(width, height)?;
        img.save_with_format(path, image::ImageFormat::Png)
            .map_err(|source| ChartError::Save {
                path: path.to_owned(),
                source,
            })
    }
}

fn format_tick(v: f64, step: f64) -> String {
    if step.fract() == 0.0 {
        format!("{v:.0}")
    } else if (step * 10.0).fract() == 0.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Fills columns `x0..x1`, rows `y0..y1`, clipped to the image.
fn fill(img: &mut RgbImage, x0: u32, x1: u32, y0: u32, y1: u32, c: Rgb<u8>) {
    for y in y0..y1.min(img.height()) {
        for x in x0..x1.min(img.width()) {
            img.put_pixel(x, y, c);
        }
    }
}

fn text_width(text: &str, scale: u32) -> u32 {
    let n = text.chars().count() as u32;
    if n == 0 {
        0
    } else {
        (n * 6 - 1) * scale
    }
}

/// Draws `text` with its top-left corner at (x, y); pixels outside the image are dropped.
fn draw_text(img: &mut RgbImage, text: &str, x: u32, y: u32, scale: u32, c: Rgb<u8>) {
    for (i, ch) in text.chars().enumerate() {
        let rows = glyph(ch);
        let gx = x + i as u32 * 6 * scale;
        for (r, bits) in rows.iter().enumerate() {
            for col in 0..5u32 {
                if bits & (0x10 >> col) != 0 {
                    let px = gx + col * scale;
                    let py = y + r as u32 * scale;
                    fill(img, px, px + scale, py, py + scale, c);
                }
            }
        }
    }
}

/// Draws `text` rotated 90° counter-clockwise, reading bottom to top from (x, y_bottom).
fn draw_text_vertical(
    img: &mut RgbImage,
    text: &str,
    x: u32,
    y_bottom: u32,
    scale: u32,
    c: Rgb<u8>,
) {
    for (i, ch) in text.chars().enumerate() {
        let rows = glyph(ch);
        let base = y_bottom.saturating_sub(i as u32 * 6 * scale);
        for (r, bits) in rows.iter().enumerate() {
            for col in 0..5u32 {
                if bits & (0x10 >> col) != 0 {
                    // Glyph column -> upward offset, glyph row -> rightward offset.
                    let px = x + r as u32 * scale;
                    let Some(py) = base.checked_sub((col + 1) * scale) else {
                        continue;
                    };
                    fill(img, px, px + scale, py, py + scale, c);
                }
            }
        }
    }
}

/// 5×7 glyphs, one byte per row, bit 4 = leftmost column.
fn glyph(ch: char) -> [u8; 7] {
    match ch.to_ascii_uppercase() {
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        ' ' => [0; 7],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ',' => [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0x1F],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '+' => [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
        '=' => [0, 0, 0x1F, 0, 0x1F, 0, 0],
        '\'' => [0x0C, 0x04, 0x08, 0, 0, 0, 0],
        _ => [0x0E, 0x11, 0x01, 0x02, 0x04, 0, 0x04], // '?'
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> BarChart {
        BarChart {
            title: "ViT-B top-1".into(),
            x_label: "dataset".into(),
            y_label: "top-1 accuracy (%)".into(),
            series: vec!["original".into(), "finetuned".into()],
            groups: vec![
                BarGroup {
                    label: "ImageNet-A".into(),
                    values: vec![20.0, 40.0],
                },
                BarGroup {
                    label: "ImageNet-R".into(),
                    values: vec![35.0, 80.0],
                },
                BarGroup {
                    label: "ObjectNet".into(),
                    values: vec![f64::NAN, 50.0],
                },
            ],
            y_max: Some(100.0),
        }
    }

    /// Pixels of `colour` in column `x` of the plot area (rows MARGIN_TOP..=baseline).
    fn count_in_column(img: &RgbImage, x: u32, baseline: u32, colour: [u8; 3]) -> u32 {
        (MARGIN_TOP..=baseline)
            .filter(|&y| img.get_pixel(x, y).0 == colour)
            .count() as u32
    }

    #[test]
    fn png_has_size_and_proportional_bars() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accuracy.png");
        let c = chart();
        c.save_png(&path, 640, 400).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (640, 400));

        // Plot height 400 - 60 - 60 = 280 px for 100 %: 20 % -> 56, 40 % -> 112,
        // 35 % -> 98, 80 % -> 224, 50 % -> 140 px; no bar for NaN.
        let layout = c.layout(640, 400).unwrap();
        assert_eq!(layout.plot_height, 280);
        let expected = [
            ((0, 0), 56),
            ((0, 1), 112),
            ((1, 0), 98),
            ((1, 1), 224),
            ((2, 0), 0),
            ((2, 1), 140),
        ];
        assert_eq!(layout.bars.len(), expected.len());
        for ((g, s), px) in expected {
            let bar = layout
                .bars
                .iter()
                .find(|b| b.group == g && b.series == s)
                .unwrap();
            let x = (bar.left + bar.right) / 2;
            assert_eq!(bar.bottom - bar.top, px);
            assert_eq!(
                count_in_column(&img, x, layout.baseline, PALETTE[s]),
                px,
                "group {g} series {s}"
            );
            // A bar sits on the x axis.
            if px > 0 {
                assert_eq!(img.get_pixel(x, layout.baseline - 1).0, PALETTE[s]);
            }
            assert_eq!(img.get_pixel(x, layout.baseline).0, [0, 0, 0]);
        }
    }

    #[test]
    fn rendering_is_deterministic_and_has_text() {
        let a = chart().render(640, 400).unwrap();
        let b = chart().render(640, 400).unwrap();
        assert_eq!(a, b);
        // The title band (rows 10..24) holds black text pixels.
        let black = (10..24)
            .flat_map(|y| (0..640).map(move |x| (x, y)))
            .filter(|&(x, y)| a.get_pixel(x, y).0 == [0, 0, 0])
            .count();
        assert!(black > 50, "{black}");
    }

    #[test]
    fn automatic_y_max_is_round() {
        // 84.3 / 5 = 16.9 -> step 20; 42.4 -> 10; 7 -> 2; 11 -> 2.5.
        assert_eq!(nice_max(84.3), 100.0);
        assert_eq!(nice_max(42.4), 50.0);
        assert_eq!(nice_max(7.0), 8.0);
        assert_eq!(nice_max(11.0), 12.5);
        assert_eq!(tick_step(100.0), 20.0);
        let mut c = chart();
        c.y_max = None;
        assert_eq!(c.layout(640, 400).unwrap().y_max, 80.0);
    }

    #[test]
    fn invalid_charts() {
        let mut c = chart();
        c.groups[1].values.pop();
        assert!(matches!(
            c.layout(640, 400),
            Err(ChartError::ValueCount {
                got: 1,
                series: 2,
                ..
            })
        ));
        assert!(matches!(
            chart().layout(100, 100),
            Err(ChartError::TooSmall { .. })
        ));
        let mut c = chart();
        c.y_max = Some(0.0);
        assert!(matches!(c.layout(640, 400), Err(ChartError::YMax(_))));
        let err = chart()
            .save_png(Path::new("/nonexistent-dir/x.png"), 640, 400)
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/x.png"));
    }
}
