//! Reader of ImageNet-Segmentation (`gtsegs_ijcv.mat`, Guillaumin et al. 2014).
//!
//! The file is MATLAB v7.3, i.e. HDF5 behind a 512-byte user block, in which MATLAB
//! cell arrays are datasets of HDF5 object references:
//!
//! * `/value/img` — (N, 1) references; row i points at a uint8 array stored as
//!   (3, W, H) (MATLAB is column-major, so the axes appear reversed) → (H, W, 3) RGB;
//! * `/value/gt` — (N, 1) references; row i points at a 1×1 cell, i.e. another
//!   reference dataset, whose element [0, 0] points at the mask stored as (W, H)
//!   → (H, W) with 0 = background and 1 = foreground.
//!
//! Linking needs the HDF5 C library (Debian/Ubuntu: `apt-get install libhdf5-dev`).

use std::path::{Path, PathBuf};

use hdf5::{Dataset, File, Location, ObjectReference1, ReferencedObject};
use hdf5_metno as hdf5;
use image::{GrayImage, RgbImage};
use thiserror::Error;

/// Official download location, repeated in error messages.
pub const GTSEGS_URL: &str = "http://calvin-vision.net/bigstuff/proj-imagenet/data/gtsegs_ijcv.mat";

const EXPECTED: &str = "expected MATLAB v7.3 gtsegs_ijcv.mat with /value/img and /value/gt \
                        (object references of shape (N, 1))";

/// Why the dataset file or one of its entries could not be read.
#[derive(Debug, Error)]
pub enum MatError {
    #[error("{} does not exist; download ImageNet-Segmentation from {GTSEGS_URL}", .path.display())]
    NotFound { path: PathBuf },
    #[error("cannot open {} as HDF5 ({source}); {EXPECTED}", .path.display())]
    Open { path: PathBuf, source: hdf5::Error },
    #[error("{}: {what}; {EXPECTED}", .path.display())]
    Layout { path: PathBuf, what: String },
    #[error("{}: entry {index}: {what}; {EXPECTED}", .path.display())]
    Entry {
        path: PathBuf,
        index: usize,
        what: String,
    },
    #[error("entry {index} requested but {} holds {len} images", .path.display())]
    OutOfRange {
        path: PathBuf,
        index: usize,
        len: usize,
    },
    #[error("writing {}: {source}", .path.display())]
    Write { path: PathBuf, source: hdf5::Error },
}

/// One image with its ground-truth mask, both at the original resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub image: RgbImage,
    /// 0 = background, 1 = foreground (not 0/255).
    pub mask: GrayImage,
}

/// An open `gtsegs_ijcv.mat`; entries are read on demand.
pub struct GtSegs {
    path: PathBuf,
    file: File,
    img_refs: Vec<ObjectReference1>,
    gt_refs: Vec<ObjectReference1>,
}

impl std::fmt::Debug for GtSegs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GtSegs")
            .field("path", &self.path)
            .field("len", &self.img_refs.len())
            .finish()
    }
}

impl GtSegs {
    /// Opens the file and reads the two reference tables (not the images).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, MatError> {
        let path = path.as_ref().to_owned();
        if !path.exists() {
            return Err(MatError::NotFound { path });
        }
        let file = File::open(&path).map_err(|source| MatError::Open {
            path: path.clone(),
            source,
        })?;
        let img_refs = read_ref_column(&file, "value/img", &path)?;
        let gt_refs = read_ref_column(&file, "value/gt", &path)?;
        if img_refs.len() != gt_refs.len() {
            return Err(MatError::Layout {
                path,
                what: format!(
                    "/value/img has {} entries but /value/gt has {}",
                    img_refs.len(),
                    gt_refs.len()
                ),
            });
        }
        Ok(Self {
            path,
            file,
            img_refs,
            gt_refs,
        })
    }

    /// The file this reader was opened on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of images (4,276 for the published file).
    pub fn len(&self) -> usize {
        self.img_refs.len()
    }

    /// Whether the file holds no image.
    pub fn is_empty(&self) -> bool {
        self.img_refs.is_empty()
    }

    /// Reads entry `index`: the RGB image and its mask.
    pub fn get(&self, index: usize) -> Result<Sample, MatError> {
        if index >= self.len() {
            return Err(MatError::OutOfRange {
                path: self.path.clone(),
                index,
                len: self.len(),
            });
        }
        let entry = |what: String| MatError::Entry {
            path: self.path.clone(),
            index,
            what,
        };

        let img = deref_dataset(&self.file, &self.img_refs[index])
            .map_err(|e| entry(format!("/value/img: {e}")))?;
        let image = read_image(&img).map_err(|e| entry(format!("image {}: {e}", img.name())))?;

        let cell = deref_dataset(&self.file, &self.gt_refs[index])
            .map_err(|e| entry(format!("/value/gt: {e}")))?;
        let inner = cell.read_raw::<ObjectReference1>().map_err(|e| {
            entry(format!(
                "mask cell {} is not a reference array: {e}",
                cell.name()
            ))
        })?;
        let first = inner
            .first()
            .ok_or_else(|| entry(format!("mask cell {} is empty", cell.name())))?;
        let mask_ds = deref_dataset(&self.file, first)
            .map_err(|e| entry(format!("mask cell {}: {e}", cell.name())))?;
        let mask =
            read_mask(&mask_ds).map_err(|e| entry(format!("mask {}: {e}", mask_ds.name())))?;
        Ok(Sample { image, mask })
    }
}

fn read_ref_column(
    file: &File,
    name: &str,
    path: &Path,
) -> Result<Vec<ObjectReference1>, MatError> {
    let layout = |what: String| MatError::Layout {
        path: path.to_owned(),
        what,
    };
    let ds = file
        .dataset(name)
        .map_err(|e| layout(format!("no dataset /{name} ({e})")))?;
    let shape = ds.shape();
    let column = matches!(shape.as_slice(), [_] | [_, 1] | [1, _]);
    if !column {
        return Err(layout(format!("/{name} has shape {shape:?}, not (N, 1)")));
    }
    ds.read_raw::<ObjectReference1>()
        .map_err(|e| layout(format!("/{name} does not hold object references ({e})")))
}

fn deref_dataset(loc: &Location, r: &ObjectReference1) -> Result<Dataset, String> {
    match loc.dereference(r) {
        Ok(ReferencedObject::Dataset(ds)) => Ok(ds),
        Ok(other) => Err(format!("reference points at {other:?}, not a dataset")),
        Err(e) => Err(format!("dangling reference ({e})")),
    }
}

/// (3, W, H) colour or (W, H) grey → H×W RGB. Any numeric type is converted to u8 by HDF5.
fn read_image(ds: &Dataset) -> Result<RgbImage, String> {
    let shape = ds.shape();
    let data = ds
        .read_raw::<u8>()
        .map_err(|e| format!("not a numeric array ({e})"))?;
    let (channels, w, h) = match shape.as_slice() {
        &[3, w, h] => (3, w, h),
        &[w, h] => (1, w, h),
        s => return Err(format!("shape {s:?}, expected (3, W, H)")),
    };
    let (w32, h32) = dims_u32(w, h)?;
    let plane = w * h;
    Ok(RgbImage::from_fn(w32, h32, |x, y| {
        let at = x as usize * h + y as usize;
        if channels == 3 {
            image::Rgb([data[at], data[plane + at], data[2 * plane + at]])
        } else {
            image::Rgb([data[at]; 3])
        }
    }))
}

/// (W, H) → H×W mask.
fn read_mask(ds: &Dataset) -> Result<GrayImage, String> {
    let shape = ds.shape();
    let &[w, h] = shape.as_slice() else {
        return Err(format!("shape {shape:?}, expected (W, H)"));
    };
    let data = ds
        .read_raw::<u8>()
        .map_err(|e| format!("not a numeric array ({e})"))?;
    let (w32, h32) = dims_u32(w, h)?;
    Ok(GrayImage::from_fn(w32, h32, |x, y| {
        image::Luma([data[x as usize * h + y as usize]])
    }))
}

fn dims_u32(w: usize, h: usize) -> Result<(u32, u32), String> {
    match (u32::try_from(w), u32::try_from(h)) {
        (Ok(w), Ok(h)) if w > 0 && h > 0 => Ok((w, h)),
        _ => Err(format!("unusable size {w}×{h}")),
    }
}

/// Writes `samples` in the layout of `gtsegs_ijcv.mat` (512-byte user block, arrays
/// under `/#refs#`, reference tables under `/value`), so that the reader and the
/// evaluation pipeline can be exercised without the 4,276-image original.
pub fn write_gtsegs(path: &Path, samples: &[Sample]) -> Result<(), MatError> {
    let werr = |source| MatError::Write {
        path: path.to_owned(),
        source,
    };
    let file = File::with_options()
        .with_fcpl(|p| p.userblock(512))
        .create(path)
        .map_err(werr)?;
    let refs = file.create_group("#refs#").map_err(werr)?;
    let mut img_refs = Vec::with_capacity(samples.len());
    let mut gt_refs = Vec::with_capacity(samples.len());
    for (i, s) in samples.iter().enumerate() {
        let (w, h) = (s.image.width() as usize, s.image.height() as usize);
        let mut img = vec![0u8; 3 * w * h];
        for (x, y, p) in s.image.enumerate_pixels() {
            for c in 0..3 {
                img[c * w * h + x as usize * h + y as usize] = p[c];
            }
        }
        let name = format!("img{i}");
        refs.new_dataset::<u8>()
            .shape((3, w, h))
            .create(name.as_str())
            .and_then(|ds| ds.write_raw(img.as_slice()))
            .map_err(werr)?;
        img_refs.push(refs.reference::<ObjectReference1>(&name).map_err(werr)?);

        let (mw, mh) = (s.mask.width() as usize, s.mask.height() as usize);
        let mut mask = vec![0u8; mw * mh];
        for (x, y, p) in s.mask.enumerate_pixels() {
            mask[x as usize * mh + y as usize] = p[0];
        }
        let mask_name = format!("mask{i}");
        refs.new_dataset::<u8>()
            .shape((mw, mh))
            .create(mask_name.as_str())
            .and_then(|ds| ds.write_raw(mask.as_slice()))
            .map_err(werr)?;
        let mask_ref = refs
            .reference::<ObjectReference1>(&mask_name)
            .map_err(werr)?;
        let cell_name = format!("cell{i}");
        refs.new_dataset::<ObjectReference1>()
            .shape((1, 1))
            .create(cell_name.as_str())
            .and_then(|ds| ds.write_raw(&[mask_ref][..]))
            .map_err(werr)?;
        gt_refs.push(
            refs.reference::<ObjectReference1>(&cell_name)
                .map_err(werr)?,
        );
    }
    let value = file.create_group("value").map_err(werr)?;
    for (name, table) in [("img", &img_refs), ("gt", &gt_refs)] {
        value
            .new_dataset::<ObjectReference1>()
            .shape((table.len(), 1))
            .create(name)
            .and_then(|ds| ds.write_raw(table.as_slice()))
            .map_err(werr)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distinct pixel values so that any axis mix-up shows.
    fn sample(w: u32, h: u32, seed: u8) -> Sample {
        let image = RgbImage::from_fn(w, h, |x, y| {
            let v = (x * 7 + y * 31) as u8;
            image::Rgb([v.wrapping_add(seed), v ^ 0x55, (x * 13 + y) as u8])
        });
        let mask = GrayImage::from_fn(w, h, |x, y| image::Luma([u8::from(x > y)]));
        Sample { image, mask }
    }

    #[test]
    fn round_trip_of_three_differently_sized_images() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gtsegs_ijcv.mat");
        let samples = [sample(5, 3, 1), sample(2, 7, 2), sample(4, 4, 3)];
        write_gtsegs(&path, &samples).unwrap();

        let ds = GtSegs::open(&path).unwrap();
        assert_eq!(ds.len(), 3);
        for (i, want) in samples.iter().enumerate() {
            let got = ds.get(i).unwrap();
            assert_eq!(got.image.dimensions(), want.image.dimensions());
            assert_eq!(got, *want, "entry {i}");
        }
        // Spot-check one pixel by hand: entry 0 (W 5, H 3) at x 4, y 2:
        // v = 4·7 + 2·31 = 90 -> [91, 90 ^ 0x55 = 15, 4·13 + 2 = 54]; mask x > y -> 1.
        let s = ds.get(0).unwrap();
        assert_eq!(s.image.get_pixel(4, 2).0, [91, 15, 54]);
        assert_eq!(s.mask.get_pixel(4, 2).0, [1]);
        assert_eq!(s.mask.get_pixel(1, 2).0, [0]);
        assert!(matches!(
            ds.get(3),
            Err(MatError::OutOfRange {
                index: 3,
                len: 3,
                ..
            })
        ));
    }

    #[test]
    fn stored_layout_is_channel_width_height() {
        // Writes the (3, W, H) array by hand to pin the axis convention independently
        // of write_gtsegs: value at [c][x][y] = 100·c + 10·x + y.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("layout.mat");
        let (w, h) = (3usize, 2usize);
        {
            let f = File::create(&path).unwrap();
            let refs = f.create_group("#refs#").unwrap();
            let data: Vec<u8> = (0..3)
                .flat_map(|c| {
                    (0..w).flat_map(move |x| (0..h).map(move |y| (100 * c + 10 * x + y) as u8))
                })
                .collect();
            refs.new_dataset::<u8>()
                .shape((3, w, h))
                .create("a")
                .unwrap()
                .write_raw(data.as_slice())
                .unwrap();
            // Mask (W, H): value [x][y] = 1 only at x 2, y 0.
            let mask: Vec<u8> = (0..w)
                .flat_map(|x| (0..h).map(move |y| u8::from(x == 2 && y == 0)))
                .collect();
            refs.new_dataset::<u8>()
                .shape((w, h))
                .create("m")
                .unwrap()
                .write_raw(mask.as_slice())
                .unwrap();
            let m = refs.reference::<ObjectReference1>("m").unwrap();
            refs.new_dataset::<ObjectReference1>()
                .shape((1, 1))
                .create("c")
                .unwrap()
                .write_raw(&[m][..])
                .unwrap();
            let value = f.create_group("value").unwrap();
            let a = refs.reference::<ObjectReference1>("a").unwrap();
            let c = refs.reference::<ObjectReference1>("c").unwrap();
            value
                .new_dataset::<ObjectReference1>()
                .shape((1, 1))
                .create("img")
                .unwrap()
                .write_raw(&[a][..])
                .unwrap();
            value
                .new_dataset::<ObjectReference1>()
                .shape((1, 1))
                .create("gt")
                .unwrap()
                .write_raw(&[c][..])
                .unwrap();
        }
        let s = GtSegs::open(&path).unwrap().get(0).unwrap();
        assert_eq!(s.image.dimensions(), (3, 2));
        assert_eq!(s.image.get_pixel(2, 1).0, [21, 121, 221]);
        assert_eq!(s.image.get_pixel(0, 1).0, [1, 101, 201]);
        assert_eq!(s.mask.as_raw(), &vec![0, 0, 1, 0, 0, 0]);
    }

    #[test]
    fn reader_can_be_shared_across_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<GtSegs>();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gtsegs_ijcv.mat");
        let samples: Vec<Sample> = (0..4).map(|i| sample(3 + i, 2 + i, i as u8)).collect();
        write_gtsegs(&path, &samples).unwrap();
        let ds = GtSegs::open(&path).unwrap();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|i| {
                    let ds = &ds;
                    s.spawn(move || ds.get(i).unwrap())
                })
                .collect();
            for (h, want) in handles.into_iter().zip(&samples) {
                assert_eq!(&h.join().unwrap(), want);
            }
        });
    }

    #[test]
    fn clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.mat");
        let msg = GtSegs::open(&missing).unwrap_err().to_string();
        assert!(
            msg.contains("nope.mat") && msg.contains(GTSEGS_URL),
            "{msg}"
        );

        let not_hdf5 = dir.path().join("v5.mat");
        std::fs::write(&not_hdf5, b"MATLAB 5.0 MAT-file, not HDF5").unwrap();
        let err = GtSegs::open(&not_hdf5).unwrap_err();
        assert!(matches!(err, MatError::Open { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("v5.mat") && msg.contains("MATLAB v7.3"),
            "{msg}"
        );

        let wrong = dir.path().join("wrong.mat");
        File::create(&wrong).unwrap().create_group("value").unwrap();
        let msg = GtSegs::open(&wrong).unwrap_err().to_string();
        assert!(
            msg.contains("wrong.mat") && msg.contains("/value/img"),
            "{msg}"
        );
    }
}
