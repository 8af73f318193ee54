//! Grouped bar charts (accuracy per test set, one bar per model) drawn with `plotters`.
//!
//! Every bar may carry an error bar (± one standard deviation over seeds), a chance level is
//! drawn as a line, the legend sits in its own band above the plot and the caption in its own
//! band below, so no label lands on a bar or on another label. Text uses the embedded font
//! ([`crate::text`]); the output is the same on every machine.

use std::path::{Path, PathBuf};

use image::RgbImage;
use plotters::prelude::*;
use thiserror::Error;

use crate::text::{draw_labels, fit, register_font, text_size, Anchor, Label, FAMILY};

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
    #[error("group {group:?} has {got} error values but the chart has {series} series; give none or one per series (NaN for none)")]
    ErrorCount {
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
    #[error("drawing the chart: {0}")]
    Draw(String),
    #[error("writing {}: {msg}", .path.display())]
    Save { path: PathBuf, msg: String },
}

/// Width of one legend entry: swatch, gap, text, spacing to the next.
fn legend_entry_width(text: &str) -> u32 {
    16 + 6 + text_size(text, LEGEND_PX).0 + 22
}

/// One cluster of bars, e.g. one test set.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BarGroup {
    pub label: String,
    /// One value per series; NaN draws no bar and prints `n/a`.
    pub values: Vec<f64>,
    /// Empty, or one half-width of an error bar per series (e.g. the standard deviation over
    /// seeds); NaN or 0 draws none.
    pub errors: Vec<f64>,
}

/// A grouped bar chart.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BarChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Series names, shown in the legend (e.g. model names).
    pub series: Vec<String>,
    pub groups: Vec<BarGroup>,
    /// Top of the y axis; `None` picks a round number above the largest value.
    pub y_max: Option<f64>,
    /// A chance level, drawn as a horizontal line and named in the legend.
    pub chance: Option<f64>,
    /// Lines under the plot (what the groups are, what the error bars mean).
    pub caption: Vec<String>,
}

/// Series colours (matplotlib's first four), distinct from the black/grey of text and axes.
pub const PALETTE: [[u8; 3]; 4] = [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40]];

/// Colour of the chance line.
pub const CHANCE: [u8; 3] = [120, 120, 120];

const TITLE_PX: f64 = 20.0;
const LEGEND_PX: f64 = 15.0;
const TICK_PX: f64 = 14.0;
const VALUE_PX: f64 = 12.0;
const CAPTION_PX: f64 = 14.0;
const TOP_BAND: u32 = 70;
const MARGIN: u32 = 14;
const Y_AREA: u32 = 70;
const X_AREA: u32 = 56;

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
    /// Row of the x axis (value 0); bars end just above it.
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

fn draw_err(e: impl std::fmt::Display) -> ChartError {
    ChartError::Draw(e.to_string())
}

/// Fraction of a group's width left empty on each side.
const GROUP_PAD: f64 = 0.12;

impl BarChart {
    fn caption_lines(&self, width: u32) -> Vec<String> {
        let w = width.saturating_sub(2 * MARGIN + 24);
        let mut out = Vec::new();
        for c in &self.caption {
            let mut cur = String::new();
            for word in c.split(' ') {
                let cand = if cur.is_empty() {
                    word.to_owned()
                } else {
                    format!("{cur} {word}")
                };
                if cur.is_empty() || text_size(&cand, CAPTION_PX).0 <= w {
                    cur = cand;
                } else {
                    out.push(std::mem::take(&mut cur));
                    cur = word.to_owned();
                }
            }
            out.push(cur);
        }
        out
    }

    fn validate(&self, width: u32, height: u32) -> Result<f64, ChartError> {
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
            if !g.errors.is_empty() && g.errors.len() != self.series.len() {
                return Err(ChartError::ErrorCount {
                    group: g.label.clone(),
                    got: g.errors.len(),
                    series: self.series.len(),
                });
            }
        }
        let n_groups = self.groups.len() as u32;
        let n_series = self.series.len() as u32;
        // At least 4 px per bar plus a 2-bar gap per group, and 40 px of plot height.
        let min_width = Y_AREA + 2 * MARGIN + n_groups * 4 * (n_series + 2);
        let min_height = TOP_BAND + X_AREA + 2 * MARGIN + 40;
        if width < min_width || height < min_height {
            return Err(ChartError::TooSmall {
                width,
                height,
                groups: self.groups.len(),
                min_width,
                min_height,
            });
        }
        match self.y_max {
            Some(m) if m.is_finite() && m > 0.0 => Ok(m),
            Some(m) => Err(ChartError::YMax(m)),
            None => Ok(nice_max(
                self.groups
                    .iter()
                    .flat_map(|g| {
                        g.values.iter().enumerate().map(|(i, v)| {
                            v + g
                                .errors
                                .get(i)
                                .copied()
                                .filter(|e| e.is_finite())
                                .unwrap_or(0.0)
                        })
                    })
                    .filter(|v| v.is_finite())
                    .fold(0.0, f64::max),
            )),
        }
    }

    /// Validates the chart and computes where every bar goes on a `width`×`height` canvas.
    ///
    /// A bar of value v is about `v / y_max · plot_height` pixels tall (clamped to the plot),
    /// so heights are proportional to values.
    pub fn layout(&self, width: u32, height: u32) -> Result<Layout, ChartError> {
        Ok(self.render_with_layout(width, height)?.1)
    }

    /// Draws the chart.
    pub fn render(&self, width: u32, height: u32) -> Result<RgbImage, ChartError> {
        Ok(self.render_with_layout(width, height)?.0)
    }

    /// Draws the chart and says where its bars went.
    pub fn render_with_layout(
        &self,
        width: u32,
        height: u32,
    ) -> Result<(RgbImage, Layout), ChartError> {
        let y_max = self.validate(width, height)?;
        register_font();
        let caption = self.caption_lines(width);
        let caption_h = if caption.is_empty() {
            0
        } else {
            caption.len() as u32 * 19 + 8
        };
        let n_groups = self.groups.len();
        let n_series = self.series.len();
        let mut img = RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
        let mut labels = Vec::new();
        let layout;
        {
            let root =
                BitMapBackend::with_buffer(img.as_mut(), (width, height)).into_drawing_area();
            let (_, rest) = root.split_vertically(TOP_BAND);
            let (plot_area, _) = rest.split_vertically(height - TOP_BAND - caption_h);
            let mut chart = ChartBuilder::on(&plot_area)
                .margin(MARGIN)
                .margin_top(4)
                .x_label_area_size(X_AREA)
                .y_label_area_size(Y_AREA)
                .build_cartesian_2d(0f64..n_groups as f64, 0f64..y_max)
                .map_err(draw_err)?;
            let step = tick_step(y_max);
            let n_ticks = (y_max / step).round() as usize + 1;
            let y_fmt = |v: &f64| {
                if step.fract() == 0.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}")
                }
            };
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(0)
                .y_labels(n_ticks)
                .y_label_formatter(&y_fmt)
                .light_line_style(RGBColor(245, 245, 245))
                .bold_line_style(RGBColor(225, 225, 225))
                .y_desc(self.y_label.as_str())
                .x_desc(self.x_label.as_str())
                .label_style((FAMILY, TICK_PX).into_font())
                .axis_desc_style((FAMILY, LEGEND_PX).into_font())
                .draw()
                .map_err(draw_err)?;

            if let Some(c) = self.chance {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(0.0, c), (n_groups as f64, c)],
                        RGBColor(CHANCE[0], CHANCE[1], CHANCE[2]).stroke_width(2),
                    )))
                    .map_err(draw_err)?;
            }

            let slot = (1.0 - 2.0 * GROUP_PAD) / n_series as f64;
            let mut bars = Vec::new();
            for (gi, g) in self.groups.iter().enumerate() {
                for (si, &v) in g.values.iter().enumerate() {
                    let x0 = gi as f64 + GROUP_PAD + si as f64 * slot;
                    let x1 = x0 + slot * 0.92;
                    let [r, gr, b] = PALETTE[si % PALETTE.len()];
                    let colour = RGBColor(r, gr, b);
                    let (left, base) = chart.backend_coord(&(x0, 0.0));
                    let (right, _) = chart.backend_coord(&(x1, 0.0));
                    let top = if v.is_finite() {
                        let v = v.clamp(0.0, y_max);
                        chart
                            .draw_series(std::iter::once(Rectangle::new(
                                [(x0, 0.0), (x1, v)],
                                colour.filled(),
                            )))
                            .map_err(draw_err)?;
                        chart.backend_coord(&(x0, v)).1
                    } else {
                        base
                    };
                    let err = g
                        .errors
                        .get(si)
                        .copied()
                        .filter(|e| e.is_finite() && *e > 0.0);
                    let xc = (x0 + x1) / 2.0;
                    let mut label_y = top;
                    if let (Some(e), true) = (err, v.is_finite()) {
                        let (lo, hi) = ((v - e).max(0.0), (v + e).min(y_max));
                        // A line with caps, no marker: the bar's top already shows the mean.
                        let cap = slot * 0.92 / 6.0;
                        let style = BLACK.stroke_width(2);
                        let lines = [
                            vec![(xc, lo), (xc, hi)],
                            vec![(xc - cap, lo), (xc + cap, lo)],
                            vec![(xc - cap, hi), (xc + cap, hi)],
                        ];
                        chart
                            .draw_series(lines.into_iter().map(|l| PathElement::new(l, style)))
                            .map_err(draw_err)?;
                        label_y = chart.backend_coord(&(xc, hi)).1;
                    }
                    let text = if v.is_finite() {
                        format!("{v:.1}")
                    } else {
                        "n/a".to_owned()
                    };
                    // A value is printed only where it fits above its own bar.
                    if text_size(&text, VALUE_PX).0 + 2 <= (right - left) as u32 {
                        labels.push(Label {
                            text,
                            x: chart.backend_coord(&(xc, 0.0)).0,
                            y: label_y - 16,
                            size: VALUE_PX,
                            anchor: Anchor::TopCenter,
                            colour: [30, 30, 30],
                        });
                    }
                    bars.push(BarRect {
                        group: gi,
                        series: si,
                        value: v,
                        left: left as u32,
                        right: right as u32,
                        top: top as u32,
                        bottom: base as u32,
                    });
                }
            }
            // Group names under the axis, each fitted to its own slot.
            for (gi, g) in self.groups.iter().enumerate() {
                let (xa, y0) = chart.backend_coord(&(gi as f64, 0.0));
                let (xb, _) = chart.backend_coord(&(gi as f64 + 1.0, 0.0));
                labels.push(Label {
                    text: fit(&g.label, TICK_PX, (xb - xa - 6).max(10) as u32),
                    x: (xa + xb) / 2,
                    y: y0 + 6,
                    size: TICK_PX,
                    anchor: Anchor::TopCenter,
                    colour: [0, 0, 0],
                });
            }
            let (_, top) = chart.backend_coord(&(0.0, y_max));
            let (_, base) = chart.backend_coord(&(0.0, 0.0));
            layout = Layout {
                baseline: base as u32,
                plot_height: (base - top) as u32,
                y_max,
                bars,
            };
            root.present().map_err(draw_err)?;
        }

        // Title, legend band, caption.
        labels.push(Label {
            text: fit(&self.title, TITLE_PX, width - 2 * MARGIN),
            x: (width / 2) as i32,
            y: 10,
            size: TITLE_PX,
            anchor: Anchor::TopCenter,
            colour: [0, 0, 0],
        });
        let entries = self.legend_entries();
        let total = self.legend_width();
        let mut x = (width.saturating_sub(total) / 2).max(MARGIN);
        let ly = 44u32;
        for (name, colour, is_line) in &entries {
            let rows = if *is_line {
                ly + 6..ly + 9
            } else {
                ly..ly + 14
            };
            for yy in rows {
                for xx in x..(x + 16).min(width) {
                    img.put_pixel(xx, yy, image::Rgb(*colour));
                }
            }
            labels.push(Label {
                text: name.clone(),
                x: (x + 22) as i32,
                y: (ly + 7) as i32,
                size: LEGEND_PX,
                anchor: Anchor::CenterLeft,
                colour: [0, 0, 0],
            });
            x += legend_entry_width(name);
        }
        let cap_top = height - caption_h + 4;
        for (k, line) in caption.iter().enumerate() {
            labels.push(Label {
                text: line.clone(),
                x: MARGIN as i32,
                y: (cap_top + k as u32 * 19) as i32,
                size: CAPTION_PX,
                anchor: Anchor::TopLeft,
                colour: [60, 60, 60],
            });
        }
        draw_labels(&mut img, &labels).map_err(draw_err)?;
        Ok((img, layout))
    }

    /// Draws the chart and writes it as a PNG (into an existing folder).
    /// The legend's entries: (text, colour, drawn as a line), the series then the chance level.
    fn legend_entries(&self) -> Vec<(String, [u8; 3], bool)> {
        let mut entries: Vec<(String, [u8; 3], bool)> = self
            .series
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), PALETTE[i % PALETTE.len()], false))
            .collect();
        if let Some(c) = self.chance {
            let level = if c.fract() == 0.0 {
                format!("{c:.0}")
            } else {
                format!("{c:.1}")
            };
            entries.push((format!("chance ({level}%)"), CHANCE, true));
        }
        entries
    }

    /// Width in pixels of the legend band as drawn (swatch, gap, text, spacing per entry), so
    /// a caller can size the canvas to fit it.
    pub fn legend_width(&self) -> u32 {
        self.legend_entries()
            .iter()
            .map(|(t, _, _)| legend_entry_width(t))
            .sum()
    }

    /// Renders at `width`×`height` and writes the PNG atomically; the folder must exist.
    pub fn save_png(&self, path: &Path, width: u32, height: u32) -> Result<(), ChartError> {
        let img = self.render(width, height)?;
        crate::overlay::write_png_atomic(&img, path).map_err(|msg| ChartError::Save {
            path: path.to_owned(),
            msg,
        })
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
                    errors: vec![],
                },
                BarGroup {
                    label: "ImageNet-R".into(),
                    values: vec![35.0, 80.0],
                    errors: vec![],
                },
                BarGroup {
                    label: "ObjectNet".into(),
                    values: vec![f64::NAN, 50.0],
                    errors: vec![],
                },
            ],
            y_max: Some(100.0),
            chance: None,
            caption: vec![],
        }
    }

    /// Pixels of `colour` in column `x` between the plot top and the baseline.
    fn count_in_column(img: &RgbImage, x: u32, layout: &Layout, colour: [u8; 3]) -> u32 {
        (layout.baseline - layout.plot_height..=layout.baseline)
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
        let layout = c.layout(640, 400).unwrap();
        assert_eq!(img, c.render(640, 400).unwrap());
        assert!(layout.plot_height > 200, "{}", layout.plot_height);
        let expect = |v: f64| v / 100.0 * f64::from(layout.plot_height);
        assert_eq!(layout.bars.len(), 6);
        for b in &layout.bars {
            let x = (b.left + b.right) / 2;
            let px = count_in_column(&img, x, &layout, PALETTE[b.series]);
            if b.value.is_finite() {
                // Proportional to the value within a pixel of rounding.
                assert!(
                    (f64::from(px) - expect(b.value)).abs() <= 1.5,
                    "{b:?}: {px} px"
                );
                assert!(
                    (f64::from(b.bottom - b.top) - expect(b.value)).abs() <= 1.5,
                    "{b:?}"
                );
                // A bar sits on the x axis.
                assert_eq!(img.get_pixel(x, layout.baseline - 2).0, PALETTE[b.series]);
            } else {
                assert_eq!(px, 0, "no bar for NaN");
                assert_eq!(b.top, b.bottom);
            }
        }
        // Groups in order, series in order within a group, no overlap.
        for w in layout.bars.windows(2) {
            assert!(w[0].right <= w[1].left, "{w:?}");
        }
    }

    #[test]
    fn rendering_is_deterministic_and_has_text() {
        let a = chart().render(640, 400).unwrap();
        let b = chart().render(640, 400).unwrap();
        assert_eq!(a, b);
        // The title band (rows 8..32) holds dark text pixels.
        let dark = (8..32)
            .flat_map(|y| (0..640).map(move |x| (x, y)))
            .filter(|&(x, y)| a.get_pixel(x, y).0.iter().all(|&c| c < 100))
            .count();
        assert!(dark > 50, "{dark}");
    }

    #[test]
    fn error_bars_chance_line_and_caption_are_drawn() {
        let mut c = chart();
        c.groups[0].errors = vec![f64::NAN, 10.0];
        c.chance = Some(10.0);
        c.caption = vec!["Error bars: ± one standard deviation over 3 seeds. ".repeat(3)];
        let (img, layout) = c.render_with_layout(640, 420).unwrap();
        // The error bar of group 0, series 1 (40 ± 10) is black above the bar's top.
        let b = layout.bars[1];
        let x = (b.left + b.right) / 2;
        let px_per = f64::from(layout.plot_height) / 100.0;
        let above = b.top - (5.0 * px_per) as u32;
        assert_eq!(img.get_pixel(x, above).0, [0, 0, 0]);
        // No error bar over the series without one.
        let b0 = layout.bars[0];
        let x0 = (b0.left + b0.right) / 2;
        assert_ne!(
            img.get_pixel(x0, b0.top - (5.0 * px_per) as u32).0,
            [0, 0, 0]
        );
        // The chance line crosses the empty slot of the NaN value at 10 %.
        let nan = layout.bars[4];
        let y = layout.baseline - (10.0 * px_per).round() as u32;
        let grey =
            (y - 2..=y + 2).any(|yy| img.get_pixel((nan.left + nan.right) / 2, yy).0 == CHANCE);
        assert!(grey);
        // The caption wraps into the bottom band.
        let dark = (layout.baseline + 40..420)
            .flat_map(|y| (0..640).map(move |x| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0.iter().all(|&c| c < 120))
            .count();
        assert!(dark > 100, "{dark}");
        // Errors count per series.
        c.groups[1].errors = vec![1.0];
        assert!(matches!(
            c.layout(640, 420),
            Err(ChartError::ErrorCount { got: 1, .. })
        ));
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
        // Error bars count towards the top.
        c.groups[1].errors = vec![0.0, 5.0];
        assert_eq!(c.layout(640, 400).unwrap().y_max, 100.0);
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
