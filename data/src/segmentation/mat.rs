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
//! HDF5 is read with the pure-Rust `hdf5-pure` crate, so no system library is needed.
//! The file may be damaged or not what it claims: every size it declares is checked
//! against the file's length before anything is allocated for it.

use std::path::{Path, PathBuf};

use hdf5_pure::{AttrValue, DType, Dataset, File, FileBuilder, Object};
use image::{GrayImage, RgbImage};
use thiserror::Error;

/// Official download location, repeated in error messages.
pub const GTSEGS_URL: &str = "http://calvin-vision.net/bigstuff/proj-imagenet/data/gtsegs_ijcv.mat";

const EXPECTED: &str = "expected MATLAB v7.3 gtsegs_ijcv.mat with /value/img and /value/gt \
                        (object references of shape (N, 1))";

/// The largest factor by which deflate can shrink data; a compressed array declaring more
/// than this times the file's length cannot be genuine.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// MATLAB's MAT-file header at the head of the user block (text, then version 0x0200 and the
/// "IM" endianness mark at bytes 124..128), so that MATLAB recognises the written files.
fn matlab_header() -> Vec<u8> {
    let mut h = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .".to_vec();
    h.resize(116, b' ');
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&[0x00, 0x02, b'I', b'M']);
    h
}

/// Why the dataset file or one of its entries could not be read.
#[derive(Debug, Error)]
pub enum MatError {
    #[error("{} does not exist; download ImageNet-Segmentation from {GTSEGS_URL}", .path.display())]
    NotFound { path: PathBuf },
    #[error("cannot open {} as HDF5 ({reason}); {EXPECTED}", .path.display())]
    Open { path: PathBuf, reason: String },
    #[error("{}: {what}; {EXPECTED}", .path.display())]
    Layout { path: PathBuf, what: String },
    #[error("{}: holds no image (/value/img and /value/gt have 0 entries); download the full \
             file from {GTSEGS_URL}", .path.display())]
    Empty { path: PathBuf },
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
    #[error("writing {}: {reason}", .path.display())]
    Write { path: PathBuf, reason: String },
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
    /// Length of the file: the bound on every array size it declares.
    file_len: u64,
    /// What `/value/img` row i points at.
    images: Vec<Object>,
    /// What `/value/gt` row i points at (a 1×1 cell of one more reference).
    cells: Vec<Object>,
}

impl std::fmt::Debug for GtSegs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GtSegs")
            .field("path", &self.path)
            .field("len", &self.images.len())
            .finish()
    }
}

impl GtSegs {
    /// Opens the file and resolves the two reference tables (not the images).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, MatError> {
        let path = path.as_ref().to_owned();
        if !path.exists() {
            return Err(MatError::NotFound { path });
        }
        let open_err = |reason: String| MatError::Open {
            path: path.clone(),
            reason,
        };
        let file_len = std::fs::metadata(&path)
            .map_err(|e| open_err(e.to_string()))?
            .len();
        let file = File::open(&path).map_err(|e| open_err(e.to_string()))?;
        let images = read_ref_column(&file, "value/img", &path, file_len)?;
        let cells = read_ref_column(&file, "value/gt", &path, file_len)?;
        if images.len() != cells.len() {
            return Err(MatError::Layout {
                path,
                what: format!(
                    "/value/img has {} entries but /value/gt has {}",
                    images.len(),
                    cells.len()
                ),
            });
        }
        if images.is_empty() {
            return Err(MatError::Empty { path });
        }
        Ok(Self {
            path,
            file_len,
            images,
            cells,
        })
    }

    /// The file this reader was opened on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of images (4,276 for the published file).
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether the file holds no image (never true of an opened file: [`GtSegs::open`]
    /// refuses one).
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Reads entry `index`: the RGB image and its mask. A mask of another size than its
    /// image, or with values other than 0 and 1, is an error of this entry only.
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

        let img = as_dataset(&self.images[index]).map_err(|e| entry(format!("/value/img: {e}")))?;
        let image = read_image(img, self.file_len).map_err(|e| entry(format!("image: {e}")))?;

        let cell = as_dataset(&self.cells[index]).map_err(|e| entry(format!("/value/gt: {e}")))?;
        let inner =
            dereference(cell, self.file_len).map_err(|e| entry(format!("mask cell: {e}")))?;
        let first = inner
            .first()
            .ok_or_else(|| entry("mask cell is empty".into()))?;
        let mask_ds = as_dataset(first).map_err(|e| entry(format!("mask cell: {e}")))?;
        let mask = read_mask(mask_ds, self.file_len).map_err(|e| entry(format!("mask: {e}")))?;
        if mask.dimensions() != image.dimensions() {
            return Err(entry(format!(
                "mask is {}×{} but its image is {}×{}",
                mask.width(),
                mask.height(),
                image.width(),
                image.height()
            )));
        }
        if let Some(v) = mask.as_raw().iter().find(|&&v| v > 1) {
            let n = mask.as_raw().iter().filter(|&&v| v > 1).count();
            return Err(entry(format!(
                "mask holds {v} at {n} pixel(s); masks must be 0 (background) or 1 (foreground)"
            )));
        }
        Ok(Sample { image, mask })
    }
}

fn read_ref_column(
    file: &File,
    name: &str,
    path: &Path,
    file_len: u64,
) -> Result<Vec<Object>, MatError> {
    let layout = |what: String| MatError::Layout {
        path: path.to_owned(),
        what,
    };
    let ds = file
        .dataset(name)
        .map_err(|e| layout(format!("no dataset /{name} ({e})")))?;
    let shape = ds
        .shape()
        .map_err(|e| layout(format!("/{name}: unreadable shape ({e})")))?;
    let column = matches!(shape.as_slice(), [_] | [_, 1] | [1, _]);
    if !column {
        return Err(layout(format!("/{name} has shape {shape:?}, not (N, 1)")));
    }
    dereference(&ds, file_len).map_err(|e| layout(format!("/{name}: {e}")))
}

/// The objects a reference array points at, after checking that it is one and that its
/// declared size fits in the file.
fn dereference(ds: &Dataset, file_len: u64) -> Result<Vec<Object>, String> {
    match ds.dtype() {
        Ok(DType::ObjectReference) => {}
        Ok(other) => return Err(format!("holds {other}, not object references")),
        Err(e) => return Err(format!("unreadable datatype ({e})")),
    }
    let shape = ds.shape().map_err(|e| format!("unreadable shape ({e})"))?;
    checked_bytes(ds, &shape, 8, file_len)?;
    ds.dereference()
        .map_err(|e| format!("unresolvable object reference ({e})"))
}

fn as_dataset(o: &Object) -> Result<&Dataset, String> {
    match o {
        Object::Dataset(ds) => Ok(ds),
        Object::Group(_) => Err("reference points at a group, not an array".into()),
        _ => Err("reference points at neither a group nor an array".into()),
    }
}

/// Size in bytes of an array of `shape` with `elem`-byte elements, refused when the file
/// cannot hold it (deflate-compressed arrays may be up to [`MAX_DEFLATE_RATIO`] times larger).
fn checked_bytes(ds: &Dataset, shape: &[u64], elem: u64, file_len: u64) -> Result<usize, String> {
    let bytes = shape
        .iter()
        .try_fold(elem, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("declared shape {shape:?} overflows"))?;
    let limit = if ds.filters().is_empty() {
        file_len
    } else {
        file_len.saturating_mul(MAX_DEFLATE_RATIO)
    };
    if bytes > limit {
        return Err(format!(
            "declared shape {shape:?} needs {bytes} bytes, more than a {file_len}-byte file holds"
        ));
    }
    usize::try_from(bytes).map_err(|_| format!("declared shape {shape:?} is too large"))
}

/// The bytes and shape of a uint8 array (MATLAB `uint8` or `logical`).
fn read_u8_array(ds: &Dataset, file_len: u64) -> Result<(Vec<usize>, Vec<u8>), String> {
    match ds.dtype() {
        Ok(DType::U8) => {}
        Ok(other) => return Err(format!("stored as {other}, not uint8")),
        Err(e) => return Err(format!("unreadable datatype ({e})")),
    }
    let shape = ds.shape().map_err(|e| format!("unreadable shape ({e})"))?;
    let n = checked_bytes(ds, &shape, 1, file_len)?;
    let data = ds
        .read_raw()
        .map_err(|e| format!("unreadable data ({e})"))?;
    if data.len() != n {
        return Err(format!(
            "shape {shape:?} declares {n} bytes but {} were read",
            data.len()
        ));
    }
    // Each dimension is at most n, which fits in usize.
    Ok((shape.iter().map(|&d| d as usize).collect(), data))
}

/// (3, W, H) colour or (W, H) grey → H×W RGB.
fn read_image(ds: &Dataset, file_len: u64) -> Result<RgbImage, String> {
    let (shape, data) = read_u8_array(ds, file_len)?;
    let (channels, w, h) = match *shape.as_slice() {
        [3, w, h] => (3, w, h),
        [w, h] => (1, w, h),
        ref s => return Err(format!("shape {s:?}, expected (3, W, H)")),
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
fn read_mask(ds: &Dataset, file_len: u64) -> Result<GrayImage, String> {
    let (shape, data) = read_u8_array(ds, file_len)?;
    let [w, h] = *shape.as_slice() else {
        return Err(format!("shape {shape:?}, expected (W, H)"));
    };
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

/// Writes `samples` in the layout of `gtsegs_ijcv.mat` (512-byte user block with MATLAB's
/// header, arrays under `/#refs#` with their `MATLAB_class`, reference tables under `/value`),
/// so that the reader and the evaluation pipeline can be exercised without the 4,276-image
/// original. The file is written atomically.
pub fn write_gtsegs(path: &Path, samples: &[Sample]) -> Result<(), MatError> {
    let class = |name: &str| AttrValue::AsciiString(name.into());
    let mut b = FileBuilder::new();
    b.with_userblock(512);
    b.with_userblock_content(&matlab_header());
    let mut refs = b.create_group("#refs#");
    let mut img_paths = Vec::with_capacity(samples.len());
    let mut cell_paths = Vec::with_capacity(samples.len());
    for (i, s) in samples.iter().enumerate() {
        let (w, h) = (s.image.width() as usize, s.image.height() as usize);
        let mut img = vec![0u8; 3 * w * h];
        for (x, y, p) in s.image.enumerate_pixels() {
            for c in 0..3 {
                img[c * w * h + x as usize * h + y as usize] = p[c];
            }
        }
        refs.create_dataset(&format!("img{i}"))
            .with_u8_data(&img)
            .with_shape(&[3, w as u64, h as u64])
            .set_attr("MATLAB_class", class("uint8"));

        let (mw, mh) = (s.mask.width() as usize, s.mask.height() as usize);
        let mut mask = vec![0u8; mw * mh];
        for (x, y, p) in s.mask.enumerate_pixels() {
            mask[x as usize * mh + y as usize] = p[0];
        }
        refs.create_dataset(&format!("mask{i}"))
            .with_u8_data(&mask)
            .with_shape(&[mw as u64, mh as u64])
            .set_attr("MATLAB_class", class("uint8"));
        let mask_path = format!("#refs#/mask{i}");
        refs.create_dataset(&format!("cell{i}"))
            .with_path_references(&[mask_path.as_str()])
            .with_shape(&[1, 1])
            .set_attr("MATLAB_class", class("cell"));
        img_paths.push(format!("#refs#/img{i}"));
        cell_paths.push(format!("#refs#/cell{i}"));
    }
    b.add_group(refs.finish());
    let mut value = b.create_group("value");
    value.set_attr("MATLAB_class", class("struct"));
    for (name, table) in [("img", &img_paths), ("gt", &cell_paths)] {
        let table: Vec<&str> = table.iter().map(String::as_str).collect();
        value
            .create_dataset(name)
            .with_path_references(&table)
            .with_shape(&[table.len() as u64, 1])
            .set_attr("MATLAB_class", class("cell"));
    }
    b.add_group(value.finish());
    let werr = |reason: String| MatError::Write {
        path: path.to_owned(),
        reason,
    };
    let bytes = b.finish().map_err(|e| werr(e.to_string()))?;
    write_atomic(path, &bytes).map_err(|e| werr(e.to_string()))
}

/// A uniquely named temporary file in the target's folder, flushed and renamed over `path`,
/// so that an interrupted write never leaves a truncated file that opens as a damaged dataset.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/gtsegs")
            .join(name)
    }

    /// Distinct pixel values so that any axis mix-up shows.
    fn sample(w: u32, h: u32, seed: u8) -> Sample {
        let image = RgbImage::from_fn(w, h, |x, y| {
            let v = (x * 7 + y * 31) as u8;
            image::Rgb([v.wrapping_add(seed), v ^ 0x55, (x * 13 + y) as u8])
        });
        let mask = GrayImage::from_fn(w, h, |x, y| image::Luma([u8::from(x > y)]));
        Sample { image, mask }
    }

    /// The formulas of `make_gtsegs.py`.
    fn fixture_pixel(i: u32, c: u32, x: u32, y: u32) -> u8 {
        ((97 * c + 13 * y + 29 * x + 7 * i) % 256) as u8
    }

    fn fixture_mask(i: u32, x: u32, y: u32) -> u8 {
        u8::from((x + 2 * y + i).is_multiple_of(3))
    }

    #[test]
    fn h5py_written_file_is_read_value_for_value() {
        let ds = GtSegs::open(fixture("gtsegs_small.mat")).unwrap();
        // (height, width, colour) as in make_gtsegs.py; entry 1 is deflate-compressed.
        let entries = [(3, 5, true), (7, 2, true), (4, 6, false), (6, 4, true)];
        assert_eq!(ds.len(), entries.len());
        for (i, &(h, w, colour)) in entries.iter().enumerate() {
            let i32 = i as u32;
            let s = ds.get(i).unwrap();
            assert_eq!(s.image.dimensions(), (w, h), "entry {i}");
            assert_eq!(s.mask.dimensions(), (w, h), "entry {i}");
            for (x, y, p) in s.image.enumerate_pixels() {
                let want: [u8; 3] = if colour {
                    [0, 1, 2].map(|c| fixture_pixel(i32, c, x, y))
                } else {
                    [fixture_pixel(i32, 0, x, y); 3]
                };
                assert_eq!(p.0, want, "entry {i} pixel ({x}, {y})");
            }
            for (x, y, p) in s.mask.enumerate_pixels() {
                assert_eq!(p.0, [fixture_mask(i32, x, y)], "entry {i} mask ({x}, {y})");
            }
        }
        // By hand: entry 0 at x 4, y 2: 13·2 + 29·4 = 142 → [142, 239, 336 mod 256 = 80];
        // mask (4 + 4) mod 3 ≠ 0 → 0, at x 1, y 1: (1 + 2) mod 3 = 0 → 1.
        let s = ds.get(0).unwrap();
        assert_eq!(s.image.get_pixel(4, 2).0, [142, 239, 80]);
        assert_eq!(s.mask.get_pixel(4, 2).0, [0]);
        assert_eq!(s.mask.get_pixel(1, 1).0, [1]);
        assert!(matches!(
            ds.get(4),
            Err(MatError::OutOfRange {
                index: 4,
                len: 4,
                ..
            })
        ));
    }

    #[test]
    fn round_trip_of_three_differently_sized_images() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gtsegs_ijcv.mat");
        let samples = [sample(5, 3, 1), sample(2, 7, 2), sample(4, 4, 3)];
        write_gtsegs(&path, &samples).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(b"MATLAB 7.3 MAT-file"));
        assert_eq!(&bytes[124..128], b"\x00\x02IM");
        assert_eq!(
            &bytes[512..516],
            b"\x89HDF",
            "HDF5 after the 512-byte user block"
        );

        let ds = GtSegs::open(&path).unwrap();
        assert_eq!(ds.len(), 3);
        for (i, want) in samples.iter().enumerate() {
            assert_eq!(ds.get(i).unwrap(), *want, "entry {i}");
        }
        // Entry 0 (W 5, H 3) at x 4, y 2: v = 4·7 + 2·31 = 90 → [91, 90 ^ 0x55 = 15, 54].
        let s = ds.get(0).unwrap();
        assert_eq!(s.image.get_pixel(4, 2).0, [91, 15, 54]);
        assert_eq!(s.mask.get_pixel(4, 2).0, [1]);
        assert_eq!(s.mask.get_pixel(1, 2).0, [0]);
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
        assert!(matches!(err, MatError::Open { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("v5.mat") && msg.contains("MATLAB v7.3"),
            "{msg}"
        );

        let err = GtSegs::open(fixture("gtsegs_no_gt.mat")).unwrap_err();
        assert!(matches!(err, MatError::Layout { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("gtsegs_no_gt.mat") && msg.contains("no dataset /value/gt"),
            "{msg}"
        );

        let err = GtSegs::open(fixture("gtsegs_not_refs.mat")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("gtsegs_not_refs.mat")
                && msg.contains("/value/img")
                && msg.contains("not object references"),
            "{msg}"
        );
    }

    #[test]
    fn a_file_without_entries_is_an_error_naming_it() {
        let err = GtSegs::open(fixture("gtsegs_empty.mat")).unwrap_err();
        assert!(matches!(err, MatError::Empty { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("gtsegs_empty.mat") && msg.contains("0 entries"),
            "{msg}"
        );
    }

    #[test]
    fn a_bad_entry_is_an_error_of_that_entry_only() {
        let ds = GtSegs::open(fixture("gtsegs_bad_entries.mat")).unwrap();
        assert_eq!(ds.len(), 7);
        assert_eq!(ds.get(0).unwrap().image.dimensions(), (5, 3));
        assert_eq!(ds.get(5).unwrap().mask.dimensions(), (4, 2));
        let wants: [(usize, &str); 5] = [
            (1, "mask holds 255 at 4 pixel(s)"),
            (2, "image: stored as f64, not uint8"),
            (3, "mask cell is empty"),
            (4, "mask is 3×2 but its image is 3×3"),
            (6, "not uint8"),
        ];
        for (index, want) in wants {
            let err = ds.get(index).unwrap_err();
            assert!(
                matches!(err, MatError::Entry { index: i, .. } if i == index),
                "{err}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains("gtsegs_bad_entries.mat")
                    && msg.contains(&format!("entry {index}:"))
                    && msg.contains(want),
                "entry {index}: {msg}"
            );
        }
    }

    /// Position of the dataspace dims `(3, 5, 3)` of entry 0's image in the fixture.
    fn find_dims(bytes: &[u8], dims: &[u64]) -> usize {
        let pat: Vec<u8> = dims.iter().flat_map(|d| d.to_le_bytes()).collect();
        bytes
            .windows(pat.len())
            .position(|w| w == pat.as_slice())
            .expect("dims in the fixture")
    }

    #[test]
    fn a_huge_declared_size_is_refused_before_allocating() {
        let mut bytes = std::fs::read(fixture("gtsegs_small.mat")).unwrap();
        let at = find_dims(&bytes, &[3, 5, 3]);
        bytes[at + 8..at + 16].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.mat");
        std::fs::write(&path, &bytes).unwrap();
        let ds = GtSegs::open(&path).unwrap();
        let msg = ds.get(0).unwrap_err().to_string();
        assert!(
            msg.contains("huge.mat") && msg.contains("entry 0:") && msg.contains("more than"),
            "{msg}"
        );
        assert_eq!(ds.get(1).unwrap().image.dimensions(), (2, 7));
    }
}
