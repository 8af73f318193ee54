//! The splits of the dataset (training, finetuning, the six test sets) and which samples each
//! holds: the training set's exact grey fraction, the finetune sets' first images per class.
//! Each split has its own random key and every sample its own stream.

use rayon::prelude::*;

use super::draw::draw_sample;
use super::random::Draw;
use super::{Sample, SynthConfig};

/// The six test sets: each moves one thing away from the training distribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TestSet {
    /// Class background, as in training.
    Id,
    /// Uniformly random background type.
    BgRand,
    /// A random wrong class's background: the shortcut points to a wrong class.
    BgSwap,
    /// Flat grey background: object only.
    FgOnly,
    /// Object near a random corner (fully inside), random background.
    Loc,
    /// Object at half size, random background.
    Size,
}

impl TestSet {
    pub const ALL: [TestSet; 6] = [
        TestSet::Id,
        TestSet::BgRand,
        TestSet::BgSwap,
        TestSet::FgOnly,
        TestSet::Loc,
        TestSet::Size,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TestSet::Id => "id",
            TestSet::BgRand => "bg_rand",
            TestSet::BgSwap => "bg_swap",
            TestSet::FgOnly => "fg_only",
            TestSet::Loc => "loc",
            TestSet::Size => "size",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// One split of the dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    /// The first `finetune_per_class` images of each class of a fresh id draw, with masks.
    Finetune,
    /// Held-out masked images from another fresh id draw.
    FinetuneVal,
    Test(TestSet),
}

impl Split {
    /// Every split in the order they are generated and hashed.
    pub fn all() -> Vec<Split> {
        let mut v = vec![Split::Train, Split::Finetune, Split::FinetuneVal];
        v.extend(TestSet::ALL.into_iter().map(Split::Test));
        v
    }

    /// Stable name; it also keys the split's random stream, so it must never change.
    pub fn name(self) -> String {
        match self {
            Split::Train => "train".into(),
            Split::Finetune => "finetune".into(),
            Split::FinetuneVal => "finetune-val".into(),
            Split::Test(t) => format!("test/{}", t.name()),
        }
    }

    /// Folder of the images and, for masked splits, of the ImageNet-S masks.
    pub(super) fn dirs(self) -> (String, Option<String>) {
        match self {
            Split::Train => ("train".into(), None),
            Split::Finetune => ("finetune/images".into(), Some("finetune/masks".into())),
            Split::FinetuneVal => (
                "finetune-val/images".into(),
                Some("finetune-val/masks".into()),
            ),
            Split::Test(t) => (
                format!("test/{}", t.name()),
                Some(format!("test/{}-masks", t.name())),
            ),
        }
    }
}

fn sample_stream(cfg: &SynthConfig, split: Split, index: usize) -> Draw {
    // Stream 0 is the split-level plan; sample i uses stream i + 1.
    Draw::new(cfg.seed, split, index as u64 + 1)
}

pub(super) fn generate_split(cfg: &SynthConfig, split: Split) -> Vec<Sample> {
    let k = cfg.classes;
    match split {
        Split::Train => {
            // Exactly round(grey_frac·n) grey images, spread over the classes (class i % K,
            // grey for the first n_grey), then shuffled so no prefix is special.
            let n = cfg.n_train;
            let n_grey = (cfg.grey_frac * n as f64).round() as usize;
            let mut plan: Vec<(usize, bool)> = (0..n).map(|i| (i % k, i < n_grey)).collect();
            Draw::new(cfg.seed, split, 0).shuffle(&mut plan);
            plan.into_par_iter()
                .enumerate()
                .map(|(i, (class, grey))| {
                    let mut rng = sample_stream(cfg, split, i);
                    draw_sample(cfg, split, class, grey, &mut rng)
                })
                .collect()
        }
        Split::Test(_) => (0..cfg.n_test)
            .into_par_iter()
            .map(|i| {
                let mut rng = sample_stream(cfg, split, i);
                draw_sample(cfg, split, i % k, false, &mut rng)
            })
            .collect(),
        Split::Finetune | Split::FinetuneVal => {
            // A fresh id draw with uniformly random classes; keep the first `per` of each.
            let per = if split == Split::Finetune {
                cfg.finetune_per_class
            } else {
                cfg.finetune_val_per_class
            };
            let mut chosen: Vec<Vec<usize>> = vec![Vec::new(); k];
            let mut i = 0;
            while chosen.iter().any(|c| c.len() < per) {
                let class = sample_stream(cfg, split, i).below(k);
                if chosen[class].len() < per {
                    chosen[class].push(i);
                }
                i += 1;
            }
            let picks: Vec<usize> = chosen.into_iter().flatten().collect();
            picks
                .into_par_iter()
                .map(|i| {
                    let mut rng = sample_stream(cfg, split, i);
                    // Re-draw the class so the stream continues exactly as in the id draw.
                    let class = rng.below(k);
                    draw_sample(cfg, split, class, false, &mut rng)
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::generate;
    use super::super::test_configs::small;
    use super::*;

    #[test]
    fn deterministic_and_seed_dependent() {
        for split in Split::all() {
            let a = generate(&small(1), split).unwrap();
            let b = generate(&small(1), split).unwrap();
            let c = generate(&small(2), split).unwrap();
            assert_eq!(a, b, "{}", split.name());
            assert_ne!(a, c, "{}", split.name());
        }
    }

    #[test]
    fn splits_have_independent_streams() {
        let base = small(5);
        let more_test = SynthConfig {
            n_test: 80,
            ..base.clone()
        };
        let more_train = SynthConfig {
            n_train: 240,
            ..base.clone()
        };
        assert_eq!(
            generate(&base, Split::Train).unwrap(),
            generate(&more_test, Split::Train).unwrap()
        );
        for split in [Split::Finetune, Split::Test(TestSet::BgSwap)] {
            let a = generate(&base, split).unwrap();
            let b = generate(&more_train, split).unwrap();
            assert_eq!(a, b);
        }
        // A longer test set extends the shorter one.
        let a = generate(&base, Split::Test(TestSet::Loc)).unwrap();
        let b = generate(&more_test, Split::Test(TestSet::Loc)).unwrap();
        assert_eq!(a[..], b[..a.len()]);
        // Different splits do not share images.
        let id = generate(&base, Split::Test(TestSet::Id)).unwrap();
        let ft = generate(&base, Split::Finetune).unwrap();
        assert!(ft.iter().all(|f| id.iter().all(|t| t.rgb != f.rgb)));
    }

    #[test]
    fn train_is_balanced_with_exact_grey_fraction() {
        for (n, k) in [(200, 8), (203, 8), (4000, 8), (95, 10)] {
            let cfg = SynthConfig {
                n_train: n,
                classes: k,
                ..small(7)
            };
            let train = generate(&cfg, Split::Train).unwrap();
            assert_eq!(train.len(), n);
            let mut per_class = vec![0usize; k];
            let mut grey_per_class = vec![0usize; k];
            for s in &train {
                per_class[s.class] += 1;
                match s.background {
                    None => grey_per_class[s.class] += 1,
                    Some(b) => assert_eq!(b, s.class, "rho = 1: no conflicting examples"),
                }
            }
            let (lo, hi) = (n / k, n.div_ceil(k));
            assert!(
                per_class.iter().all(|&c| c == lo || c == hi),
                "{per_class:?}"
            );
            let grey: usize = grey_per_class.iter().sum();
            assert!((grey as f64 - 0.2 * n as f64).abs() <= 1.0, "{grey} of {n}");
            let (glo, ghi) = (grey / k, grey.div_ceil(k));
            assert!(grey_per_class.iter().all(|&c| c == glo || c == ghi));
            // The shuffle leaves no all-grey prefix.
            assert!(train[..n / 4].iter().any(|s| s.background.is_some()));
        }
    }

    #[test]
    fn test_set_backgrounds() {
        let cfg = SynthConfig {
            n_test: 400,
            ..small(11)
        };
        let k = cfg.classes;
        for t in TestSet::ALL {
            let set = generate(&cfg, Split::Test(t)).unwrap();
            assert_eq!(set.len(), 400);
            let mut per_class = vec![0; k];
            let mut seen = vec![0; k];
            for s in &set {
                per_class[s.class] += 1;
                if let Some(b) = s.background {
                    seen[b] += 1;
                }
                match t {
                    TestSet::Id => assert_eq!(s.background, Some(s.class)),
                    TestSet::FgOnly => assert_eq!(s.background, None),
                    TestSet::BgSwap => assert_ne!(s.background.unwrap(), s.class),
                    _ => assert!(s.background.unwrap() < k),
                }
            }
            assert!(per_class.iter().all(|&c| c == 50), "{per_class:?}");
            if !matches!(t, TestSet::Id | TestSet::FgOnly) {
                // Random backgrounds use every type.
                assert!(seen.iter().all(|&c| c > 20), "{}: {seen:?}", t.name());
            }
        }
    }

    #[test]
    fn finetune_sets_are_first_per_class_of_id_draws() {
        let cfg = small(29);
        let ft = generate(&cfg, Split::Finetune).unwrap();
        let val = generate(&cfg, Split::FinetuneVal).unwrap();
        assert_eq!(ft.len(), 24);
        assert_eq!(val.len(), 8);
        for (i, s) in ft.iter().enumerate() {
            assert_eq!(s.class, i / 3);
            assert_eq!(s.background, Some(s.class));
        }
        assert!(ft.iter().all(|f| val.iter().all(|v| v.rgb != f.rgb)));
    }
}
