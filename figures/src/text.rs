//! Text on bitmaps through plotters and the embedded font.

use std::sync::Once;

use image::RgbImage;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::{FigureError, Result};

/// DejaVu Sans (Bitstream Vera licence, `fonts/LICENSE-DejaVu.txt`).
const FONT: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");

/// The family name every figure uses.
pub const FAMILY: &str = "sans-serif";

/// Registers the embedded font with plotters (once per process).
pub fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is a compile-time constant checked by the tests: failure here is a bug.
        if plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_err() {
            panic!("the embedded DejaVu Sans font is not a valid font file");
        }
    });
}

/// Width and height in pixels of `text` at `size` px.
pub fn text_size(text: &str, size: f64) -> (u32, u32) {
    register_font();
    (FAMILY, size)
        .into_font()
        .box_size(text)
        .unwrap_or((0, size as u32))
}

/// `text`, shortened with an ellipsis until it is at most `max_width` px wide.
pub fn fit(text: &str, size: f64, max_width: u32) -> String {
    if text_size(text, size).0 <= max_width {
        return text.to_owned();
    }
    let chars: Vec<char> = text.chars().collect();
    for n in (0..chars.len()).rev() {
        let s: String = chars[..n].iter().collect::<String>() + "…";
        if text_size(&s, size).0 <= max_width {
            return s;
        }
    }
    String::new()
}

/// `text` and the largest size from `size` down to `min_size` (in half-pixel steps) at which
/// it fits `max_width`, so that a long class name stays whole; below `min_size` it is
/// shortened with an ellipsis instead.
pub fn fit_shrinking(text: &str, size: f64, min_size: f64, max_width: u32) -> (String, f64) {
    let mut s = size;
    while s >= min_size {
        if text_size(text, s).0 <= max_width {
            return (text.to_owned(), s);
        }
        s -= 0.5;
    }
    (fit(text, min_size, max_width), min_size)
}

/// Where a text's anchor point sits relative to the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    TopLeft,
    TopCenter,
    CenterLeft,
    CenterRight,
}

/// One line of text to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub text: String,
    pub x: i32,
    pub y: i32,
    pub size: f64,
    pub anchor: Anchor,
    pub colour: [u8; 3],
}

/// Draws `labels` onto `img`.
pub fn draw_labels(img: &mut RgbImage, labels: &[Label]) -> Result<()> {
    register_font();
    let (w, h) = img.dimensions();
    let err = |e: &dyn std::fmt::Display| FigureError::Draw(e.to_string());
    {
        let root = BitMapBackend::with_buffer(img.as_mut(), (w, h)).into_drawing_area();
        for l in labels {
            let pos = match l.anchor {
                Anchor::TopLeft => Pos::new(HPos::Left, VPos::Top),
                Anchor::TopCenter => Pos::new(HPos::Center, VPos::Top),
                Anchor::CenterLeft => Pos::new(HPos::Left, VPos::Center),
                Anchor::CenterRight => Pos::new(HPos::Right, VPos::Center),
            };
            let [r, g, b] = l.colour;
            let colour = RGBColor(r, g, b);
            let style = TextStyle::from((FAMILY, l.size).into_font())
                .color(&colour)
                .pos(pos);
            root.draw_text(&l.text, &style, (l.x, l.y))
                .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_measured_drawn_and_fitted() {
        let (w, h) = text_size("tabby cat 87.1%", 14.0);
        assert!(w > 60 && w < 160 && h > 5, "{w}x{h}");
        assert!(text_size("Mm", 14.0).0 > text_size("ii", 14.0).0);
        let short = fit("a very long title that cannot fit", 14.0, 80);
        assert!(
            short.ends_with('…') && text_size(&short, 14.0).0 <= 80,
            "{short}"
        );
        assert_eq!(fit("ok", 14.0, 80), "ok");
        // Shrinking keeps a title whole while a smaller size fits, then shortens it.
        let title = "pred: great white shark 99%";
        let (w15, w12) = (text_size(title, 15.0).0, text_size(title, 12.0).0);
        assert!(w12 < w15, "{w12} {w15}");
        let (t, s) = fit_shrinking(title, 15.0, 12.0, w12);
        assert_eq!(t, title);
        assert!(
            (12.0..15.0).contains(&s) && text_size(&t, s).0 <= w12,
            "{s}"
        );
        assert_eq!(
            fit_shrinking(title, 15.0, 12.0, w15),
            (title.to_owned(), 15.0)
        );
        let (t, s) = fit_shrinking(title, 15.0, 12.0, w12 / 2);
        assert!(
            t.ends_with('…') && s == 12.0 && text_size(&t, s).0 <= w12 / 2,
            "{t}"
        );

        let mut img = RgbImage::from_pixel(120, 30, image::Rgb([255, 255, 255]));
        let label = Label {
            text: "Hello".into(),
            x: 60,
            y: 5,
            size: 16.0,
            anchor: Anchor::TopCenter,
            colour: [0, 0, 0],
        };
        draw_labels(&mut img, &[label]).unwrap();
        let dark: Vec<(u32, u32)> = img
            .enumerate_pixels()
            .filter(|(_, _, p)| p.0[0] < 128)
            .map(|(x, y, _)| (x, y))
            .collect();
        assert!(dark.len() > 30, "{}", dark.len());
        // Centred on x = 60, below y = 5.
        let (x0, x1) = (
            dark.iter().map(|p| p.0).min().unwrap(),
            dark.iter().map(|p| p.0).max().unwrap(),
        );
        assert!((i64::from(x0 + x1) / 2 - 60).abs() <= 3, "{x0}..{x1}");
        let (y0, y1) = (
            dark.iter().map(|p| p.1).min().unwrap(),
            dark.iter().map(|p| p.1).max().unwrap(),
        );
        assert!(y0 >= 2 && y1 <= 5 + 17, "rows {y0}..{y1}");
    }
}
