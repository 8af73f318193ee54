//! Segmentation test of relevance maps on ImageNet-Segmentation.
//!
//! The pixel accuracy, mIoU and mAP follow the reference evaluation
//! (`SegmentationTest/imagenet_seg_eval.py` of RobustViT) operation by operation,
//! so that numbers are comparable with the paper:
//!
//! * the map is binarised at its own mean (`fg = r' > mean`, `bg = r' <= mean`);
//! * pixel accuracy and the per-class IoU are ratios of **dataset-level** sums,
//!   not means of per-image ratios; both denominators carry numpy's `np.spacing(1)`
//!   (= `f64::EPSILON`, 2.2e-16), as the reference does;
//! * AP is sklearn's `average_precision_score` on the pooled two-channel vector
//!   (`[1 - r', r']` against `[gt == 0, gt == 1]`), one value per image, and mAP is
//!   the mean over images.
//!
//! NaN handling reproduces the reference exactly, which is *not* the same as replacing
//! NaN by 0 before everything: one NaN makes the mean NaN, so both `r' > mean` and
//! `r' <= mean` are false everywhere and the argmax over the two all-zero channels picks
//! background for every pixel; for AP, a NaN pixel scores 0 in **both** channels (the
//! background channel `1 - NaN` is NaN and is zeroed too). A map is all-NaN when the
//! raw relevance was constant (min–max normalisation divides 0 by 0), so this case occurs.
//!
//! Two localisation scores in the style of Quantus are accumulated alongside
//! ([`relevance_mass_accuracy`], [`pointing_game`]); there NaN is read as 0.

use thiserror::Error;

/// `np.spacing(1)`: the reference adds it to every ratio denominator.
const EPS: f64 = f64::EPSILON;

/// Why an image could not be scored.
#[derive(Debug, Error, PartialEq)]
pub enum MetricsError {
    /// Relevance and mask must describe the same pixels.
    #[error(
        "relevance map has {relevance} values but the ground-truth mask has {mask}; \
         resize both to the same H×W (224×224 in the reference protocol) before scoring"
    )]
    LengthMismatch { relevance: usize, mask: usize },
    /// Nothing to score.
    #[error("empty relevance map and mask (0 pixels); skip the image or fix the loader")]
    Empty,
    /// The reference one-hot encodes the mask into exactly two classes.
    #[error(
        "ground-truth mask value {value} at pixel {index} is not 0 (background) or 1 \
         (foreground); binarise the mask (nearest-neighbour resize keeps it binary)"
    )]
    InvalidMask { value: u8, index: usize },
}

/// Scores of one image, returned by [`SegMetrics::add`] for logging and debugging.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageScores {
    /// Pixels whose thresholded prediction equals the ground truth.
    pub correct: u64,
    /// Pixels with a label (all of them: the mask is binary).
    pub labelled: u64,
    /// Intersection per class `[bg, fg]`.
    pub intersection: [u64; 2],
    /// Union per class `[bg, fg]`.
    pub union: [u64; 2],
    /// Average precision of the pooled two-channel vector.
    pub ap: f64,
    /// Relevance-mass accuracy; `None` when the mask has no foreground pixel.
    pub mass_acc: Option<f64>,
    /// Pointing-game hit; `None` when the mask has no foreground pixel.
    pub pointing: Option<bool>,
}

/// Dataset-level results. All values are fractions in [0, 1]; a value whose
/// denominator is empty (no image, or no image with foreground) is NaN.
#[derive(Debug, Clone, PartialEq)]
pub struct SegResult {
    /// Number of images added.
    pub images: u64,
    /// Σ correct / Σ labelled.
    pub pixel_acc: f64,
    /// IoU of the background class from dataset-level sums.
    pub iou_bg: f64,
    /// IoU of the foreground class from dataset-level sums.
    pub iou_fg: f64,
    /// (IoU_bg + IoU_fg) / 2.
    pub miou: f64,
    /// Mean over images of the per-image AP.
    pub map: f64,
    /// Mean relevance-mass accuracy over images with a non-empty mask.
    pub mass_acc: f64,
    /// Fraction of pointing-game hits over images with a non-empty mask.
    pub pointing: f64,
    /// Images that entered `mass_acc` and `pointing` (non-empty mask).
    pub localisation_images: u64,
}

/// Accumulator of the segmentation test over a dataset.
///
/// Sums are integers so that the order in which images (or per-thread
/// accumulators, see [`SegMetrics::merge`]) are added does not change the IoU.
#[derive(Debug, Clone, Default)]
pub struct SegMetrics {
    images: u64,
    correct: u64,
    labelled: u64,
    intersection: [u64; 2],
    union: [u64; 2],
    ap_sum: f64,
    mass_sum: f64,
    pointing_hits: u64,
    localisation_images: u64,
}

impl SegMetrics {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Scores one image and adds it to the dataset sums.
    ///
    /// `relevance` is the min–max normalised map r' (row-major H·W, NaN allowed) and
    /// `mask` the binary ground truth of the same size (0 = background, 1 = foreground).
    pub fn add(&mut self, relevance: &[f32], mask: &[u8]) -> Result<ImageScores, MetricsError> {
        let s = score_image(relevance, mask)?;
        self.images += 1;
        self.correct += s.correct;
        self.labelled += s.labelled;
        for c in 0..2 {
            self.intersection[c] += s.intersection[c];
            self.union[c] += s.union[c];
        }
        self.ap_sum += s.ap;
        if let (Some(m), Some(p)) = (s.mass_acc, s.pointing) {
            self.mass_sum += m;
            self.pointing_hits += u64::from(p);
            self.localisation_images += 1;
        }
        Ok(s)
    }

    /// Adds the sums of another accumulator (e.g. one per worker thread).
    pub fn merge(&mut self, other: &SegMetrics) {
        self.images += other.images;
        self.correct += other.correct;
        self.labelled += other.labelled;
        for c in 0..2 {
            self.intersection[c] += other.intersection[c];
            self.union[c] += other.union[c];
        }
        self.ap_sum += other.ap_sum;
        self.mass_sum += other.mass_sum;
        self.pointing_hits += other.pointing_hits;
        self.localisation_images += other.localisation_images;
    }

    /// Number of images added so far.
    pub fn images(&self) -> u64 {
        self.images
    }

    /// The dataset-level metrics of everything added so far.
    pub fn finish(&self) -> SegResult {
        if self.images == 0 {
            return SegResult {
                images: 0,
                pixel_acc: f64::NAN,
                iou_bg: f64::NAN,
                iou_fg: f64::NAN,
                miou: f64::NAN,
                map: f64::NAN,
                mass_acc: f64::NAN,
                pointing: f64::NAN,
                localisation_images: 0,
            };
        }
        let iou = |c: usize| self.intersection[c] as f64 / (EPS + self.union[c] as f64);
        let (iou_bg, iou_fg) = (iou(0), iou(1));
        let (mass_acc, pointing) = if self.localisation_images == 0 {
            (f64::NAN, f64::NAN)
        } else {
            let n = self.localisation_images as f64;
            (self.mass_sum / n, self.pointing_hits as f64 / n)
        };
        SegResult {
            images: self.images,
            pixel_acc: self.correct as f64 / (EPS + self.labelled as f64),
            iou_bg,
            iou_fg,
            miou: (iou_bg + iou_fg) / 2.0,
            map: self.ap_sum / self.images as f64,
            mass_acc,
            pointing,
            localisation_images: self.localisation_images,
        }
    }
}

/// Scores one image without accumulating (see [`SegMetrics::add`]).
pub fn score_image(relevance: &[f32], mask: &[u8]) -> Result<ImageScores, MetricsError> {
    if relevance.len() != mask.len() {
        return Err(MetricsError::LengthMismatch {
            relevance: relevance.len(),
            mask: mask.len(),
        });
    }
    if relevance.is_empty() {
        return Err(MetricsError::Empty);
    }
    if let Some((index, &value)) = mask.iter().enumerate().find(|(_, &v)| v > 1) {
        return Err(MetricsError::InvalidMask { value, index });
    }

    // torch compares the f32 map with an f32 mean; the f64 mean rounded to f32 is the
    // correctly rounded value of that reduction.
    let has_nan = relevance.iter().any(|v| v.is_nan());
    let threshold = if has_nan {
        None
    } else {
        let sum: f64 = relevance.iter().map(|&v| f64::from(v)).sum();
        Some((sum / relevance.len() as f64) as f32)
    };

    let mut correct = 0u64;
    let mut intersection = [0u64; 2];
    let mut pred_count = [0u64; 2];
    let mut gt_count = [0u64; 2];
    for (&r, &g) in relevance.iter().zip(mask) {
        let pred = match threshold {
            Some(t) if r > t => 1usize,
            _ => 0usize,
        };
        let g = usize::from(g);
        pred_count[pred] += 1;
        gt_count[g] += 1;
        if pred == g {
            correct += 1;
            intersection[g] += 1;
        }
    }
    let union = [
        pred_count[0] + gt_count[0] - intersection[0],
        pred_count[1] + gt_count[1] - intersection[1],
    ];

    let n = relevance.len();
    let mut scores = Vec::with_capacity(2 * n);
    let mut targets = Vec::with_capacity(2 * n);
    for (&r, &g) in relevance.iter().zip(mask) {
        let bg = 1.0f32 - r;
        scores.push(if bg.is_nan() { 0.0 } else { bg });
        targets.push(g == 0);
    }
    for (&r, &g) in relevance.iter().zip(mask) {
        scores.push(if r.is_nan() { 0.0 } else { r });
        targets.push(g == 1);
    }
    let ap = average_precision(&scores, &targets);
    let ap = if ap.is_nan() { 0.0 } else { ap };

    Ok(ImageScores {
        correct,
        labelled: n as u64,
        intersection,
        union,
        ap,
        mass_acc: relevance_mass_accuracy(relevance, mask),
        pointing: pointing_game(relevance, mask),
    })
}

/// sklearn's `average_precision_score` for binary targets:
/// AP = Σ_k (R_k − R_{k−1})·P_k over the distinct score values taken in
/// decreasing order, tied scores forming one operating point.
///
/// Scores must not be NaN. With no positive target the result is 0 (recent
/// sklearn; older versions return NaN, which the reference maps to 0 anyway).
pub fn average_precision(scores: &[f32], targets: &[bool]) -> f64 {
    assert_eq!(
        scores.len(),
        targets.len(),
        "average_precision: scores and targets differ in length"
    );
    let total_pos = targets.iter().filter(|&&t| t).count();
    if total_pos == 0 {
        return 0.0;
    }
    let mut order: Vec<u32> = (0..scores.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| scores[b as usize].total_cmp(&scores[a as usize]));

    let (mut tp, mut fp) = (0u64, 0u64);
    let mut prev_recall = 0.0f64;
    let mut ap = 0.0f64;
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i] as usize];
        while i < order.len() && scores[order[i] as usize] == s {
            if targets[order[i] as usize] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        let recall = tp as f64 / total_pos as f64;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += (recall - prev_recall) * precision;
        prev_recall = recall;
    }
    ap
}

/// Relevance-mass accuracy (Arras et al. 2022, Quantus `RelevanceMassAccuracy`):
/// relevance inside the foreground mask divided by the total relevance.
///
/// As in Quantus with its defaults, the absolute value of the relevance is used
/// (a no-op for min–max normalised maps) and NaN counts as 0. `None` when the mask
/// has no foreground pixel (Quantus returns NaN and skips it); 0 when the map has
/// no relevance at all, since then no mass lies on the object.
pub fn relevance_mass_accuracy(relevance: &[f32], mask: &[u8]) -> Option<f64> {
    if !mask.iter().any(|&m| m != 0) {
        return None;
    }
    let (mut inside, mut total) = (0.0f64, 0.0f64);
    for (&r, &m) in relevance.iter().zip(mask) {
        let r = if r.is_nan() { 0.0 } else { f64::from(r).abs() };
        total += r;
        if m != 0 {
            inside += r;
        }
    }
    Some(if total > 0.0 { inside / total } else { 0.0 })
}

/// Pointing game (Zhang et al. 2018, Quantus `PointingGame`): a hit when the most
/// relevant pixel lies on the object.
///
/// Tie rule, as in Quantus: every pixel reaching the maximum counts, and it is a hit
/// when **any** of them lies in the mask (so a constant map hits whenever the mask is
/// non-empty; the mean-threshold metrics penalise such maps instead). Absolute values,
/// NaN read as 0. `None` when the mask has no foreground pixel.
pub fn pointing_game(relevance: &[f32], mask: &[u8]) -> Option<bool> {
    if !mask.iter().any(|&m| m != 0) {
        return None;
    }
    let clean = |r: f32| if r.is_nan() { 0.0 } else { r.abs() };
    let max = relevance
        .iter()
        .map(|&r| clean(r))
        .fold(f32::NEG_INFINITY, f32::max);
    Some(
        relevance
            .iter()
            .zip(mask)
            .any(|(&r, &m)| m != 0 && clean(r) == max),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn ap_groups_tied_scores() {
        // Sorted: 0.5 -> {pos, neg}: tp 1, fp 1, P 1/2, R 1/2.
        //         0.2 -> {pos}:      tp 2, fp 1, P 2/3, R 1.
        // AP = 1/2·1/2 + 1/2·2/3 = 1/4 + 1/3 = 7/12.
        close(
            average_precision(&[0.5, 0.5, 0.2], &[true, false, true]),
            7.0 / 12.0,
        );
        // Breaking the tie in favour of the positive gives 1/2·1 + 1/2·2/3 = 5/6.
        close(
            average_precision(&[0.5, 0.4, 0.2], &[true, false, true]),
            5.0 / 6.0,
        );
    }

    #[test]
    fn ap_matches_sklearn_docstring_example() {
        // sklearn docs: average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) = 0.8333...
        // 0.8 pos: P 1, R 1/2; 0.4 neg: no recall step; 0.35 pos: P 2/3, R 1.
        close(
            average_precision(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
            0.5 + 0.5 * 2.0 / 3.0,
        );
    }

    #[test]
    fn ap_without_positives_is_zero() {
        assert_eq!(average_precision(&[0.3, 0.7], &[false, false]), 0.0);
    }

    #[test]
    fn perfect_separation() {
        // r' = [0, .25, .5, 1], mean .4375 -> fg = {2, 3} = gt.
        let s = score_image(&[0.0, 0.25, 0.5, 1.0], &[0, 0, 1, 1]).unwrap();
        assert_eq!(s.correct, 4);
        assert_eq!(s.intersection, [2, 2]);
        assert_eq!(s.union, [2, 2]);
        // Pooled scores: bg [1, .75, .5, 0] on targets [1,1,0,0]; fg [0, .25, .5, 1] on [0,0,1,1].
        // 1.0 {T,T}: P 1, R .5; .75 {T}: P 1, R .75; .5 {F,T}: tp 4 fp 1, P .8, R 1.
        // AP = .5 + .25 + .25·.8 = .95.
        close(s.ap, 0.95);
        // Mass: (.5 + 1) / 1.75 = 6/7.
        close(s.mass_acc.unwrap(), 6.0 / 7.0);
        assert_eq!(s.pointing, Some(true));
    }

    #[test]
    fn pixel_equal_to_mean_is_background() {
        // r' = [0, .5, .5, 1], mean .5 -> fg = {3} only (0.5 > 0.5 is false).
        let s = score_image(&[0.0, 0.5, 0.5, 1.0], &[0, 0, 1, 1]).unwrap();
        assert_eq!(s.correct, 3);
        // bg: pred {0,1,2}, gt {0,1}: I 2, U 3.  fg: pred {3}, gt {2,3}: I 1, U 2.
        assert_eq!(s.intersection, [2, 1]);
        assert_eq!(s.union, [3, 2]);
        // bg [1, .5, .5, 0] on [1,1,0,0]; fg [0, .5, .5, 1] on [0,0,1,1].
        // 1.0 {T,T}: P 1, R .5; .5 {T,F,F,T}: tp 4 fp 2, P 2/3, R 1. AP = .5 + .5·2/3.
        close(s.ap, 0.5 + 1.0 / 3.0);
        close(s.mass_acc.unwrap(), 1.5 / 2.0);
        assert_eq!(s.pointing, Some(true));
    }

    #[test]
    fn all_background_mask() {
        // r' = [.25, .5, .75, .5], mean .5 -> fg = {2}.
        let s = score_image(&[0.25, 0.5, 0.75, 0.5], &[0, 0, 0, 0]).unwrap();
        assert_eq!(s.correct, 3);
        // bg: pred {0,1,3}, gt all: I 3, U 4.  fg: pred {2}, gt {}: I 0, U 1.
        assert_eq!(s.intersection, [3, 0]);
        assert_eq!(s.union, [4, 1]);
        // All bg-channel entries positive, all fg-channel entries negative, and the two
        // channels hold the same multiset {.75,.5,.5,.25}: every operating point has P 1/2.
        close(s.ap, 0.5);
        assert_eq!(s.mass_acc, None);
        assert_eq!(s.pointing, None);
    }

    #[test]
    fn all_foreground_mask() {
        // r' = [0, .25, .5, 1], mean .4375 -> fg = {2, 3}.
        let s = score_image(&[0.0, 0.25, 0.5, 1.0], &[1, 1, 1, 1]).unwrap();
        assert_eq!(s.correct, 2);
        // bg: pred {0,1}, gt {}: I 0, U 2.  fg: pred {2,3}, gt all: I 2, U 4.
        assert_eq!(s.intersection, [0, 2]);
        assert_eq!(s.union, [2, 4]);
        // bg [1,.75,.5,0] all neg; fg [0,.25,.5,1] all pos.
        // 1.0 {F,T}: P 1/2 R 1/4; .75 {F}: no step; .5 {F,T}: tp 2 fp 3, P 2/5, R 1/2;
        // .25 {T}: tp 3 fp 3, P 1/2, R 3/4; 0 {F,T}: tp 4 fp 4, P 1/2, R 1.
        // AP = (1/2 + 2/5 + 1/2 + 1/2)/4 = 0.475.
        close(s.ap, 0.475);
        close(s.mass_acc.unwrap(), 1.0);
        assert_eq!(s.pointing, Some(true));
    }

    #[test]
    fn nan_pixel_makes_everything_background_and_scores_zero_in_both_channels() {
        let s = score_image(&[f32::NAN, 0.5, 1.0, 0.25], &[0, 1, 1, 0]).unwrap();
        // Mean is NaN -> every pixel background: correct = the two bg pixels.
        assert_eq!(s.correct, 2);
        // bg: pred all, gt {0,3}: I 2, U 4.  fg: pred {}, gt {1,2}: I 0, U 2.
        assert_eq!(s.intersection, [2, 0]);
        assert_eq!(s.union, [4, 2]);
        // bg channel [0 (NaN), .5, 0, .75] on [1,0,0,1]; fg [0 (NaN), .5, 1, .25] on [0,1,1,0].
        // 1.0 {T}: P 1 R 1/4; .75 {T}: P 1 R 1/2; .5 {F,T}: tp 3 fp 1, P 3/4, R 3/4;
        // .25 {F}: no step; 0 {T,F,F}: tp 4 fp 4, P 1/2, R 1.
        // AP = 1/4 + 1/4 + 3/16 + 1/8 = 0.8125.
        close(s.ap, 0.8125);
        // Localisation reads NaN as 0: (.5 + 1) / 1.75.
        close(s.mass_acc.unwrap(), 6.0 / 7.0);
        assert_eq!(s.pointing, Some(true));
    }

    #[test]
    fn all_nan_map() {
        let s = score_image(&[f32::NAN; 4], &[0, 1, 1, 0]).unwrap();
        assert_eq!(s.correct, 2);
        // Eight scores, all 0, four positives: one operating point with P 1/2, R 1.
        close(s.ap, 0.5);
        assert_eq!(s.mass_acc, Some(0.0));
        // Every pixel ties at the maximum 0 and two of them are on the object.
        assert_eq!(s.pointing, Some(true));
    }

    #[test]
    fn matches_sklearn_on_a_4x4_map_with_ties() {
        // Expected values from scikit-learn 1.9.1 / numpy on float32 arrays, replaying the
        // reference script: mean threshold, pooled [1 - r, r] vs [gt == 0, gt == 1].
        let mut r = [
            0.0f32, 0.125, 0.5, 0.375, 0.875, 1.0, 0.25, 0.5, 0.125, 0.375, 0.75, 1.0, 0.625, 0.5,
            0.0, 0.25,
        ];
        let gt = [0u8, 0, 1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 0, 0];
        // mean 0.453125; one pixel (index 13, 0.5 on background) is wrong.
        let s = score_image(&r, &gt).unwrap();
        assert_eq!(s.correct, 15);
        assert_eq!(s.intersection, [8, 7]);
        assert_eq!(s.union, [9, 8]);
        close(s.ap, 0.970_394_736_842_105_3);
        // Same map with pixel 3 NaN: all background (9 of 16 correct), sklearn AP 0.9375.
        r[3] = f32::NAN;
        let s = score_image(&r, &gt).unwrap();
        assert_eq!(s.correct, 9);
        close(s.ap, 0.9375);
    }

    #[test]
    fn pointing_game_miss_and_tie() {
        assert_eq!(pointing_game(&[0.9, 0.1, 0.2], &[0, 1, 1]), Some(false));
        // Tied maximum, one copy inside the mask -> hit.
        assert_eq!(pointing_game(&[0.9, 0.1, 0.9], &[0, 1, 1]), Some(true));
        assert_eq!(pointing_game(&[0.9, 0.1, 0.9], &[0, 0, 0]), None);
    }

    #[test]
    fn dataset_level_sums_not_per_image_means() {
        let mut m = SegMetrics::new();
        m.add(&[0.0, 0.5, 0.5, 1.0], &[0, 0, 1, 1]).unwrap();
        m.add(&[0.25, 0.5, 0.75, 0.5], &[0, 0, 0, 0]).unwrap();
        let r = m.finish();
        assert_eq!(r.images, 2);
        // (3 + 3) / 8.
        close(r.pixel_acc, 0.75);
        // bg: I 2+3, U 3+4 -> 5/7; fg: I 1+0, U 2+1 -> 1/3; mIoU = 11/21.
        // (The mean of per-image mIoUs would be (7/12 + 3/8)/2 = 23/48 instead.)
        close(r.iou_bg, 5.0 / 7.0);
        close(r.iou_fg, 1.0 / 3.0);
        close(r.miou, 11.0 / 21.0);
        // APs 5/6 and 1/2.
        close(r.map, (5.0 / 6.0 + 0.5) / 2.0);
        // Only the first image has foreground.
        assert_eq!(r.localisation_images, 1);
        close(r.mass_acc, 0.75);
        close(r.pointing, 1.0);
    }

    #[test]
    fn merge_equals_sequential_adds() {
        let mut a = SegMetrics::new();
        a.add(&[0.0, 0.5, 0.5, 1.0], &[0, 0, 1, 1]).unwrap();
        let mut b = SegMetrics::new();
        b.add(&[0.25, 0.5, 0.75, 0.5], &[0, 0, 0, 0]).unwrap();
        b.add(&[0.9, 0.1, 0.2, 0.0], &[0, 1, 1, 0]).unwrap();
        a.merge(&b);
        let mut seq = SegMetrics::new();
        seq.add(&[0.0, 0.5, 0.5, 1.0], &[0, 0, 1, 1]).unwrap();
        seq.add(&[0.25, 0.5, 0.75, 0.5], &[0, 0, 0, 0]).unwrap();
        seq.add(&[0.9, 0.1, 0.2, 0.0], &[0, 1, 1, 0]).unwrap();
        assert_eq!(a.finish(), seq.finish());
        // Third image: pointing miss, so 1 hit out of 2 localisation images.
        close(a.finish().pointing, 0.5);
    }

    #[test]
    fn empty_accumulator_is_nan() {
        let r = SegMetrics::new().finish();
        assert_eq!(r.images, 0);
        assert!(r.miou.is_nan() && r.map.is_nan() && r.pixel_acc.is_nan());
    }

    #[test]
    fn rejects_bad_input() {
        let mut m = SegMetrics::new();
        assert_eq!(
            m.add(&[0.1, 0.2], &[0]),
            Err(MetricsError::LengthMismatch {
                relevance: 2,
                mask: 1
            })
        );
        assert_eq!(m.add(&[], &[]), Err(MetricsError::Empty));
        assert_eq!(
            m.add(&[0.1, 0.2], &[0, 255]),
            Err(MetricsError::InvalidMask {
                value: 255,
                index: 1
            })
        );
        assert_eq!(m.images(), 0);
    }
}
