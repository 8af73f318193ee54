//! Colour maps of relevance overlays and colour bars.
//!
//! Viridis (perceptually uniform, readable in grey and by colour-blind readers) is the
//! default; jet is the reference code's map (`cv2.COLORMAP_JET` in `show_cam_on_image`) and
//! stays available to compare pictures with the paper's.

use std::fmt;
use std::str::FromStr;

use crate::FigureError;

/// A colour map from [0, 1] to RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorMap {
    /// matplotlib's viridis (van der Walt & Smith), interpolated from every 16th entry of
    /// its published 256-entry table (largest deviation from the full table: 1 level of 255).
    #[default]
    Viridis,
    /// Blue → cyan → yellow → red, as in the reference code.
    Jet,
}

/// Viridis at table indices 0, 16, …, 240 and 255 (of 0..=255), in [0, 1].
const VIRIDIS: [(u8, [f32; 3]); 17] = [
    (0, [0.267004, 0.004874, 0.329415]),
    (16, [0.282327, 0.094955, 0.417331]),
    (32, [0.278826, 0.175490, 0.483397]),
    (48, [0.258965, 0.251537, 0.524736]),
    (64, [0.229739, 0.322361, 0.545706]),
    (80, [0.199430, 0.387607, 0.554642]),
    (96, [0.172719, 0.448791, 0.557885]),
    (112, [0.149039, 0.508051, 0.557250]),
    (128, [0.127568, 0.566949, 0.550556]),
    (144, [0.120638, 0.625828, 0.533488]),
    (160, [0.157851, 0.683765, 0.501686]),
    (176, [0.246070, 0.738910, 0.452024]),
    (192, [0.369214, 0.788888, 0.382914]),
    (208, [0.515992, 0.831158, 0.294279]),
    (224, [0.678489, 0.863742, 0.189503]),
    (240, [0.845561, 0.887322, 0.099702]),
    (255, [0.993248, 0.906157, 0.143936]),
];

impl ColorMap {
    pub const ALL: [ColorMap; 2] = [ColorMap::Viridis, ColorMap::Jet];

    /// The name used on command lines.
    pub fn name(self) -> &'static str {
        match self {
            ColorMap::Viridis => "viridis",
            ColorMap::Jet => "jet",
        }
    }

    /// The colour at `v` in [0, 1] (clamped; NaN reads as 0).
    pub fn rgb(self, v: f32) -> [u8; 3] {
        match self {
            ColorMap::Jet => jet(v),
            ColorMap::Viridis => viridis(v),
        }
    }
}

impl fmt::Display for ColorMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ColorMap {
    type Err = FigureError;
    fn from_str(s: &str) -> Result<Self, FigureError> {
        ColorMap::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                FigureError::Invalid(format!("unknown colour map `{s}`; known: viridis, jet"))
            })
    }
}

fn unit(v: f32) -> f32 {
    if v.is_nan() {
        0.0
    } else {
        v.clamp(0.0, 1.0)
    }
}

/// The jet colour map (blue → cyan → yellow → red) at `v` in [0, 1]; NaN reads as 0.
pub fn jet(v: f32) -> [u8; 3] {
    let v = unit(v);
    let c = |center: f32| ((1.5 - (4.0 * v - center).abs()).clamp(0.0, 1.0) * 255.0).round() as u8;
    [c(3.0), c(2.0), c(1.0)]
}

/// Viridis at `v` in [0, 1]; NaN reads as 0.
pub fn viridis(v: f32) -> [u8; 3] {
    let x = unit(v) * 255.0;
    let hi = VIRIDIS
        .iter()
        .position(|(i, _)| f32::from(*i) >= x)
        .unwrap_or(VIRIDIS.len() - 1)
        .max(1);
    let (i0, c0) = VIRIDIS[hi - 1];
    let (i1, c1) = VIRIDIS[hi];
    let t = (x - f32::from(i0)) / (f32::from(i1) - f32::from(i0));
    [0, 1, 2].map(|k| ((c0[k] + t * (c1[k] - c0[k])) * 255.0).round() as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jet_endpoints() {
        assert_eq!(jet(0.0), [0, 0, 128]);
        assert_eq!(jet(0.5), [128, 255, 128]);
        assert_eq!(jet(1.0), [128, 0, 0]);
        assert_eq!(jet(f32::NAN), jet(0.0));
    }

    #[test]
    fn viridis_matches_the_published_table() {
        // Entries 0, 128 and 255 of the table, ×255 and rounded.
        assert_eq!(viridis(0.0), [68, 1, 84]);
        assert_eq!(viridis(128.0 / 255.0), [33, 145, 140]);
        assert_eq!(viridis(1.0), [253, 231, 37]);
        // Entry 100 (0.166617, 0.463708, 0.558119) lies between anchors: within one level.
        let c = viridis(100.0 / 255.0);
        for (got, want) in c.iter().zip([0.166617f32, 0.463708, 0.558119]) {
            assert!((f32::from(*got) - want * 255.0).abs() <= 1.0, "{c:?}");
        }
        // Lightness grows monotonically (perceptual order), so a grey print keeps the order.
        let luma = |c: [u8; 3]| {
            0.299 * f32::from(c[0]) + 0.587 * f32::from(c[1]) + 0.114 * f32::from(c[2])
        };
        for k in 1..=100 {
            assert!(luma(viridis(k as f32 / 100.0)) > luma(viridis((k - 1) as f32 / 100.0)));
        }
        assert_eq!(viridis(f32::NAN), viridis(0.0));
        assert_eq!(viridis(2.0), viridis(1.0));
    }

    #[test]
    fn names_round_trip() {
        for c in ColorMap::ALL {
            assert_eq!(c.name().parse::<ColorMap>().unwrap(), c);
        }
        assert_eq!(ColorMap::default(), ColorMap::Viridis);
        assert!("hot".parse::<ColorMap>().is_err());
    }
}
