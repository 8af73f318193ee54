//! Titled panels in rows, with a colour bar and a caption: the training strips, the
//! `explain` sheets and folder contact sheets are all [`Sheet`]s.
//!
//! Panels are scaled to a common box by an integer factor with nearest-neighbour sampling
//! when they are small (a 32-pixel demo image stays sharp and every model pixel stays one
//! block), and with a triangle filter when they are larger than the box. [`Sheet::layout`]
//! says where each panel lands, so a reader of the PNG can find a panel again.

use image::{imageops, Rgb, RgbImage};

use crate::overlay::{heatmap_overlay, mask_image};
use crate::text::{draw_labels, fit, fit_shrinking, text_size, Anchor, Label};
use crate::{ColorMap, FigureError, Result};

/// A rectangle in pixels: left, top, width, height.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

const MARGIN: u32 = 12;
const GAP: u32 = 10;
const ROW_GAP: u32 = 14;
const TITLE_PX: f64 = 15.0;
/// Panel titles shrink to this size before they are shortened ("great white shark").
const MIN_TITLE_PX: f64 = 12.0;
const LINE: u32 = 19;
const SHEET_TITLE_PX: f64 = 17.0;
const SHEET_TITLE_H: u32 = 28;
const CAPTION_PX: f64 = 13.0;
const CAPTION_LINE: u32 = 17;
const LABEL_PX: f64 = 14.0;
const LABEL_MAX: u32 = 150;
const BAR_W: u32 = 16;
const TEXT: [u8; 3] = [20, 20, 20];
const WHITE: Rgb<u8> = Rgb([255, 255, 255]);

/// One picture with title lines above it.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: Vec<String>,
    pub image: RgbImage,
}

/// Panels side by side, with an optional label on the left.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row {
    pub label: Option<String>,
    pub panels: Vec<Panel>,
}

/// The colour bar of the overlays: the map from 0 (bottom) to 1 (top), with its label.
#[derive(Debug, Clone, PartialEq)]
pub struct ColorBar {
    pub cmap: ColorMap,
    pub label: String,
}

/// A titled grid of panels.
#[derive(Debug, Clone, PartialEq)]
pub struct Sheet {
    pub title: Option<String>,
    pub rows: Vec<Row>,
    pub colour_bar: Option<ColorBar>,
    /// Lines under the panels, wrapped to the sheet's width.
    pub caption: Vec<String>,
    /// Side of the square box every panel is scaled into (see [`panel_side`]).
    pub panel_size: u32,
}

/// Where everything of a [`Sheet`] goes.
#[derive(Debug, Clone, PartialEq)]
pub struct SheetLayout {
    pub width: u32,
    pub height: u32,
    /// Per row, per panel: the rectangle of the scaled picture.
    pub panels: Vec<Vec<Rect>>,
    /// The colour bar's gradient, if any.
    pub colour_bar: Option<Rect>,
}

/// A panel box for images of side `image_side`: an integer multiple of it of at least
/// `min_side` px (small images grow without blur), or the image side itself when it is larger.
pub fn panel_side(image_side: u32, min_side: u32) -> u32 {
    let s = image_side.max(1);
    s * min_side.div_ceil(s).max(1)
}

/// Scales `img` to fit a `side`×`side` box (aspect kept): nearest-neighbour when growing,
/// triangle filter when shrinking.
pub fn fit_panel(img: &RgbImage, side: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let longest = w.max(h).max(1);
    if longest == side {
        return img.clone();
    }
    let nw = (u64::from(w) * u64::from(side) / u64::from(longest)).max(1) as u32;
    let nh = (u64::from(h) * u64::from(side) / u64::from(longest)).max(1) as u32;
    let filter = if longest < side {
        imageops::FilterType::Nearest
    } else {
        imageops::FilterType::Triangle
    };
    imageops::resize(img, nw, nh, filter)
}

/// Splits `text` at spaces into lines of at most `width` px.
fn wrap(text: &str, size: f64, width: u32) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in text.split(' ') {
        let candidate = if cur.is_empty() {
            word.to_owned()
        } else {
            format!("{cur} {word}")
        };
        if text_size(&candidate, size).0 <= width || cur.is_empty() {
            cur = candidate;
        } else {
            lines.push(std::mem::take(&mut cur));
            cur = word.to_owned();
        }
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

impl Sheet {
    fn label_col(&self) -> u32 {
        let w = self
            .rows
            .iter()
            .filter_map(|r| r.label.as_deref())
            .map(|l| text_size(l, LABEL_PX).0.min(LABEL_MAX))
            .max();
        w.map_or(0, |w| w + GAP)
    }

    fn bar_col(&self) -> u32 {
        self.colour_bar.as_ref().map_or(0, |b| {
            let ticks = BAR_W + 6 + text_size("0.50", TITLE_PX).0;
            2 * GAP + ticks.max(text_size(&b.label, TITLE_PX).0)
        })
    }

    fn title_lines(row: &Row) -> u32 {
        row.panels.iter().map(|p| p.title.len()).max().unwrap_or(0) as u32
    }

    fn caption_lines(&self, width: u32) -> Vec<String> {
        // Slack: plotters' rendered text runs up to a few per cent wider than `text_size`
        // says, so a line filled to the estimate would touch the right edge.
        let w = (width.saturating_sub(2 * MARGIN) * 9 / 10).max(50);
        self.caption
            .iter()
            .flat_map(|c| wrap(c, CAPTION_PX, w))
            .collect()
    }

    /// Validates the sheet and places every part.
    pub fn layout(&self) -> Result<SheetLayout> {
        if self.rows.iter().all(|r| r.panels.is_empty()) {
            return Err(FigureError::Invalid(
                "a sheet needs at least one panel".into(),
            ));
        }
        if self.panel_size == 0 {
            return Err(FigureError::Invalid("panel size must be positive".into()));
        }
        let cols = self.rows.iter().map(|r| r.panels.len()).max().unwrap_or(0) as u32;
        let side = self.panel_size;
        let x0 = MARGIN + self.label_col();
        let width = x0 + cols * side + (cols - 1) * GAP + self.bar_col() + MARGIN;
        let mut y = MARGIN
            + if self.title.is_some() {
                SHEET_TITLE_H
            } else {
                0
            };
        let mut panels = Vec::new();
        let mut bar = None;
        for (ri, row) in self.rows.iter().enumerate() {
            y += Self::title_lines(row) * LINE + if Self::title_lines(row) > 0 { 4 } else { 0 };
            let mut rects = Vec::new();
            for (ci, p) in row.panels.iter().enumerate() {
                let (w, h) = p.image.dimensions();
                let longest = w.max(h).max(1);
                let pw = (u64::from(w) * u64::from(side) / u64::from(longest)).max(1) as u32;
                let ph = (u64::from(h) * u64::from(side) / u64::from(longest)).max(1) as u32;
                let bx = x0 + ci as u32 * (side + GAP);
                rects.push(Rect {
                    x: bx + (side - pw) / 2,
                    y: y + (side - ph) / 2,
                    w: pw,
                    h: ph,
                });
            }
            if ri == 0 && self.colour_bar.is_some() {
                bar = Some(Rect {
                    x: x0 + cols * side + (cols - 1) * GAP + 2 * GAP,
                    y,
                    w: BAR_W,
                    h: side,
                });
            }
            panels.push(rects);
            y += side + ROW_GAP;
        }
        y -= ROW_GAP;
        let caption = self.caption_lines(width);
        if !caption.is_empty() {
            y += GAP + caption.len() as u32 * CAPTION_LINE;
        }
        Ok(SheetLayout {
            width,
            height: y + MARGIN,
            panels,
            colour_bar: bar,
        })
    }

    /// Draws the sheet.
    pub fn render(&self) -> Result<RgbImage> {
        let layout = self.layout()?;
        let mut img = RgbImage::from_pixel(layout.width, layout.height, WHITE);
        let mut labels = Vec::new();
        if let Some(t) = &self.title {
            labels.push(Label {
                text: fit(t, SHEET_TITLE_PX, layout.width - 2 * MARGIN),
                x: MARGIN as i32,
                y: MARGIN as i32,
                size: SHEET_TITLE_PX,
                anchor: Anchor::TopLeft,
                colour: TEXT,
            });
        }
        let side = self.panel_size;
        for (row, rects) in self.rows.iter().zip(&layout.panels) {
            let lines = Self::title_lines(row);
            let mut top = 0;
            for (p, r) in row.panels.iter().zip(rects) {
                let scaled = fit_panel(&p.image, side);
                imageops::replace(&mut img, &scaled, i64::from(r.x), i64::from(r.y));
                let box_top = r.y - (side - r.h) / 2;
                top = box_top;
                let box_x = r.x - (side - r.w) / 2;
                for (k, t) in p.title.iter().enumerate() {
                    let (text, size) = fit_shrinking(t, TITLE_PX, MIN_TITLE_PX, side);
                    labels.push(Label {
                        text,
                        x: (box_x + side / 2) as i32,
                        y: (box_top - 4 - (lines - k as u32) * LINE + 2) as i32,
                        size,
                        anchor: Anchor::TopCenter,
                        colour: TEXT,
                    });
                }
            }
            if let Some(l) = &row.label {
                labels.push(Label {
                    text: fit(l, LABEL_PX, LABEL_MAX),
                    x: MARGIN as i32,
                    y: (top + side / 2) as i32,
                    size: LABEL_PX,
                    anchor: Anchor::CenterLeft,
                    colour: TEXT,
                });
            }
        }
        if let (Some(cb), Some(r)) = (&self.colour_bar, layout.colour_bar) {
            for dy in 0..r.h {
                let v = 1.0 - dy as f32 / (r.h - 1).max(1) as f32;
                let c = Rgb(cb.cmap.rgb(v));
                for dx in 0..r.w {
                    img.put_pixel(r.x + dx, r.y + dy, c);
                }
            }
            for (v, dy) in [(1.0, 0), (0.5, r.h / 2), (0.0, r.h - 1)] {
                labels.push(Label {
                    text: format!("{v:.1}"),
                    x: (r.x + r.w + 6) as i32,
                    y: (r.y + dy) as i32,
                    size: TITLE_PX,
                    anchor: Anchor::CenterLeft,
                    colour: TEXT,
                });
                for dx in r.w..r.w + 3 {
                    img.put_pixel(r.x + dx, r.y + dy, Rgb(TEXT));
                }
            }
            labels.push(Label {
                text: cb.label.clone(),
                x: r.x as i32,
                y: (r.y.saturating_sub(LINE + 8)) as i32,
                size: TITLE_PX,
                anchor: Anchor::TopLeft,
                colour: TEXT,
            });
        }
        let caption = self.caption_lines(layout.width);
        let cap_top = layout.height - MARGIN - caption.len() as u32 * CAPTION_LINE;
        for (k, line) in caption.iter().enumerate() {
            labels.push(Label {
                text: line.clone(),
                x: MARGIN as i32,
                y: (cap_top + k as u32 * CAPTION_LINE) as i32,
                size: CAPTION_PX,
                anchor: Anchor::TopLeft,
                colour: [70, 70, 70],
            });
        }
        draw_labels(&mut img, &labels)?;
        Ok(img)
    }
}

/// What the titles of a training strip say.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StripTitles {
    /// The image's ground-truth class.
    pub class: String,
    /// The original model's top prediction, e.g. `tench 91%`.
    pub before: Option<String>,
    /// The fine-tuned model's top prediction.
    pub after: Option<String>,
    /// The epoch of the fine-tuned model.
    pub epoch: Option<usize>,
}

/// The paper's four panels with titles (image and class, mask, relevance before and after
/// fine-tuning with each model's prediction) and a colour bar. Maps and mask are row-major H·W
/// values in [0, 1].
pub fn training_strip(
    image: &RgbImage,
    mask: &[f32],
    before: &[f32],
    after: &[f32],
    cmap: ColorMap,
    titles: &StripTitles,
) -> Result<RgbImage> {
    let (w, h) = image.dimensions();
    let pred = |p: &Option<String>| p.as_ref().map(|s| format!("pred: {s}")).unwrap_or_default();
    let after_title = match titles.epoch {
        Some(e) => format!("after (epoch {e})"),
        None => "after".to_owned(),
    };
    let panels = vec![
        Panel {
            title: vec!["image".into(), format!("class: {}", titles.class)],
            image: image.clone(),
        },
        Panel {
            title: vec!["mask".into(), "foreground".into()],
            image: mask_image(mask, w, h)?,
        },
        Panel {
            title: vec!["before".into(), pred(&titles.before)],
            image: heatmap_overlay(image, before, cmap)?,
        },
        Panel {
            title: vec![after_title, pred(&titles.after)],
            image: heatmap_overlay(image, after, cmap)?,
        },
    ];
    Sheet {
        title: None,
        rows: vec![Row {
            label: None,
            panels,
        }],
        colour_bar: Some(ColorBar {
            cmap,
            label: "relevance".into(),
        }),
        caption: vec![],
        panel_size: panel_side(w.max(h), 160),
    }
    .render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x * 7) as u8, (y * 7) as u8, 90]))
    }

    #[test]
    fn panels_land_where_the_layout_says_scaled_by_whole_pixels() {
        let img = gradient(32, 32);
        let sheet = Sheet {
            title: Some("cat.png".into()),
            rows: vec![
                Row {
                    label: Some("relevance".into()),
                    panels: vec![
                        Panel {
                            title: vec!["input".into()],
                            image: img.clone(),
                        },
                        Panel {
                            title: vec!["a".into(), "b".into()],
                            image: img.clone(),
                        },
                    ],
                },
                Row {
                    label: Some("rollout".into()),
                    panels: vec![Panel {
                        title: vec![],
                        image: img.clone(),
                    }],
                },
            ],
            colour_bar: Some(ColorBar {
                cmap: ColorMap::Viridis,
                label: "relevance".into(),
            }),
            caption: vec!["A caption long enough to be wrapped over more than one line of the sheet, since the sheet is narrow.".into()],
            panel_size: panel_side(32, 150),
        };
        assert_eq!(sheet.panel_size, 160);
        let layout = sheet.layout().unwrap();
        let out = sheet.render().unwrap();
        assert_eq!(out.dimensions(), (layout.width, layout.height));
        assert_eq!(
            layout.panels.iter().map(Vec::len).collect::<Vec<_>>(),
            [2, 1]
        );
        for rects in &layout.panels {
            for r in rects {
                assert_eq!((r.w, r.h), (160, 160));
                // Each model pixel is a 5×5 block.
                for (x, y) in [(0, 0), (31, 0), (13, 29)] {
                    for (dx, dy) in [(0, 0), (4, 4), (2, 3)] {
                        assert_eq!(
                            out.get_pixel(r.x + 5 * x + dx, r.y + 5 * y + dy),
                            img.get_pixel(x, y)
                        );
                    }
                }
            }
        }
        // Panels of a row do not overlap and rows stack downwards.
        let (a, b) = (layout.panels[0][0], layout.panels[0][1]);
        assert!(a.x + a.w < b.x);
        assert!(a.y + a.h < layout.panels[1][0].y);
        // The colour bar runs from viridis(1) at the top to viridis(0) at the bottom.
        let bar = layout.colour_bar.unwrap();
        assert_eq!(
            out.get_pixel(bar.x + 2, bar.y).0,
            ColorMap::Viridis.rgb(1.0)
        );
        assert_eq!(
            out.get_pixel(bar.x + 2, bar.y + bar.h - 1).0,
            ColorMap::Viridis.rgb(0.0)
        );
        assert!(bar.x > b.x + b.w);
        // Some text was drawn above the first row (titles) and below the last (caption).
        let dark_rows = |y0: u32, y1: u32| {
            (y0..y1)
                .flat_map(|y| (0..out.width()).map(move |x| (x, y)))
                .filter(|&(x, y)| out.get_pixel(x, y).0[0] < 100)
                .count()
        };
        assert!(dark_rows(0, a.y) > 50);
        let last = layout.panels[1][0];
        assert!(dark_rows(last.y + last.h, out.height()) > 50);
    }

    #[test]
    fn empty_and_large_panels() {
        let empty = Sheet {
            title: None,
            rows: vec![],
            colour_bar: None,
            caption: vec![],
            panel_size: 100,
        };
        assert!(empty.layout().is_err());
        assert_eq!(panel_side(224, 128), 224);
        assert_eq!(panel_side(32, 128), 128);
        let big = fit_panel(&gradient(300, 150), 100);
        assert_eq!(big.dimensions(), (100, 50));
    }

    #[test]
    fn training_strip_has_four_titled_panels_and_a_colour_bar() {
        let img = gradient(32, 32);
        let n = 32 * 32;
        let mask: Vec<f32> = (0..n).map(|i| f32::from(u8::from(i % 32 > 16))).collect();
        let before = vec![0.0; n];
        let after: Vec<f32> = (0..n).map(|i| (i % 32) as f32 / 31.0).collect();
        let titles = StripTitles {
            class: "tench".into(),
            before: Some("goldfish 40%".into()),
            after: Some("tench 90%".into()),
            epoch: Some(3),
        };
        let s = training_strip(&img, &mask, &before, &after, ColorMap::Jet, &titles).unwrap();
        // Four 160-px panels, gaps, the colour bar column and margins; two title lines.
        assert!(s.width() > 4 * 160 + 3 * GAP + 2 * MARGIN, "{}", s.width());
        assert!(s.height() > 160 + 2 * LINE, "{}", s.height());
        assert!(training_strip(&img, &mask[..5], &before, &after, ColorMap::Jet, &titles).is_err());
    }
}
