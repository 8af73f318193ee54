//! Evaluation of RobustViT models: robustness accuracy, the segmentation test of
//! relevance maps, result tables and charts.
//!
//! The modules here do not depend on the model or the relevance code, so that the
//! metrics can be checked against hand-computed values in isolation:
//!
//! * [`metrics`] — pixel accuracy, mIoU, mAP of thresholded relevance maps, plus
//!   relevance-mass accuracy and the pointing game;
//! * [`topk`] — top-1 / top-5 accuracy with multi-target images and class masks;
//! * [`mat`] — reader of ImageNet-Segmentation's `gtsegs_ijcv.mat` (HDF5);
//! * [`results`] — keyed CSV tables merged idempotently and written atomically;
//! * [`chart`] — grouped bar chart PNG.

pub mod chart;
pub mod mat;
pub mod metrics;
pub mod results;
pub mod topk;
