//! A panic while preparing one image becomes an error naming that image and the cause; the
//! loader neither dies silently nor stops early (an evaluation must not end "successfully"
//! on a subset of its images).

use data::loader::{Item, Loader, LoaderOptions, SampleSource};
use std::path::PathBuf;
use std::sync::Arc;

struct Panicky {
    n: usize,
    bad: usize,
}

impl SampleSource for Panicky {
    fn len(&self) -> usize {
        self.n
    }
    fn load(&self, index: usize) -> data::Result<Item> {
        if index == self.bad {
            panic!("resize coefficients for a 0-pixel side");
        }
        Ok(Item {
            image: vec![index as f32; 3 * 2 * 2],
            mask: None,
            height: 2,
            width: 2,
            label: index as u32,
            targets: vec![index as u32],
            path: self.path(index),
        })
    }
    fn path(&self, index: usize) -> PathBuf {
        PathBuf::from(format!("/data/img{index}.JPEG"))
    }
}

#[test]
fn a_panicking_image_is_an_error_that_names_it() {
    for threads in [1, 3] {
        let src = Arc::new(Panicky { n: 10, bad: 3 });
        let opts = LoaderOptions {
            batch_size: 2,
            threads,
            prefetch: 2,
        };
        let loader = Loader::new(src, (0..10).collect(), opts, None).unwrap();
        let mut errors = Vec::new();
        let mut labels = Vec::new();
        for b in loader {
            match b {
                Ok(b) => labels.extend(b.labels),
                Err(e) => errors.push(e.to_string()),
            }
        }
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("/data/img3.JPEG"), "{}", errors[0]);
        assert!(errors[0].contains("resize coefficients"), "{}", errors[0]);
        // Every other image still came through, in order: nothing ended early.
        assert_eq!(labels, vec![0, 1, 4, 5, 6, 7, 8, 9]);
    }
}
