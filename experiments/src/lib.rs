//! Experiment drivers for the embedded benchmark: the synthetic shortcut dataset lives in [`shortcut_data`].

pub mod bench;
pub mod cli;
pub mod demo;
pub mod demo_report;
pub mod reproduction;
pub mod shortcut_data;
pub mod slurm;
