//! Writers of every dataset layout in a folder: a few classes, a few small images with the
//! encodings the real sets use, and (optionally) planted bad files. The tests of every crate use
//! them in place of the real downloads.

use std::path::{Path, PathBuf};

use image::{GrayImage, Rgb, RgbImage};

use crate::datasets::Benchmark;
use crate::error::{DataError, Result};
use crate::labels;

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticSpec {
    pub classes: usize,
    pub images_per_class: usize,
    pub width: u32,
    pub height: u32,
    /// Plant a README at the root, a truncated and an empty image, a text file in a class
    /// folder and an unknown class folder (plus the mask problems for ImageNet-S).
    pub bad_files: bool,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        Self {
            classes: 3,
            images_per_class: 2,
            width: 40,
            height: 30,
            bad_files: true,
        }
    }
}

/// Files planted to exercise the checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Planted {
    pub non_image_files: Vec<PathBuf>,
    pub truncated: Vec<PathBuf>,
    pub empty: Vec<PathBuf>,
    pub unknown_class_folders: Vec<PathBuf>,
    /// ObjectNet folders outside ImageNet.
    pub excluded_class_folders: Vec<String>,
    pub bad_masks: Vec<PathBuf>,
    pub missing_masks: Vec<PathBuf>,
    pub missing_images: Vec<PathBuf>,
}

/// A written layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synthetic {
    /// The folder to give the reader.
    pub root: PathBuf,
    /// Class folder names written with good images, in sorted order.
    pub classes: Vec<String>,
    /// Readable images written (planted bad files not included).
    pub good_images: usize,
    pub planted: Planted,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |e| DataError::io(path, e)
}

fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    std::fs::write(path, bytes).map_err(io(path))
}

/// A smooth colour pattern that depends on (class, image), so that images differ.
pub fn pattern(w: u32, h: u32, class: usize, k: usize) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            ((x * 255 / w.max(1)) as usize + class * 40) as u8,
            ((y * 255 / h.max(1)) as usize + k * 60) as u8,
            (((x + y) * 4) as usize + class * 13 + k * 7) as u8,
        ])
    })
}

fn encode_jpeg(img: &RgbImage) -> Vec<u8> {
    let mut buf = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 90)
        .encode_image(img)
        .expect("JPEG encoding to memory");
    buf
}

fn encode_gray_jpeg(img: &RgbImage) -> Vec<u8> {
    let g: GrayImage = image::DynamicImage::ImageRgb8(img.clone()).to_luma8();
    let mut buf = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 90)
        .encode_image(&g)
        .expect("JPEG encoding to memory");
    buf
}

fn encode_png(img: &image::DynamicImage) -> Vec<u8> {
    let mut buf = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut buf), image::ImageFormat::Png)
        .expect("PNG encoding to memory");
    buf
}

/// Pick `n` entries spread over a table, always including the first.
fn spread<T: Clone>(table: &[T], n: usize) -> Vec<T> {
    let n = n.min(table.len());
    (0..n)
        .map(|k| table[k * table.len() / n.max(1)].clone())
        .collect()
}

struct LayoutInfo {
    classes: Vec<String>,
    ext: &'static str,
    png: bool,
    unknown: &'static str,
}

fn layout(b: Benchmark, n: usize) -> LayoutInfo {
    let wnids =
        |t: &[labels::SubsetClass]| t.iter().map(|c| c.wnid.to_string()).collect::<Vec<_>>();
    match b {
        Benchmark::ImageNetVal | Benchmark::Sketch => LayoutInfo {
            classes: spread(labels::imagenet_wnids(), n)
                .into_iter()
                .map(String::from)
                .collect(),
            ext: "JPEG",
            png: false,
            unknown: "n00000000",
        },
        Benchmark::ImageNetV2 => LayoutInfo {
            classes: spread(&(0..1000).collect::<Vec<_>>(), n)
                .into_iter()
                .map(|i| i.to_string())
                .collect(),
            ext: "jpeg",
            png: false,
            unknown: "1000",
        },
        Benchmark::ImageNetA => LayoutInfo {
            classes: spread(&wnids(labels::imagenet_a_classes()), n),
            ext: "jpg",
            png: false,
            unknown: "n01440764",
        },
        Benchmark::ImageNetR => LayoutInfo {
            classes: spread(&wnids(labels::imagenet_r_classes()), n),
            ext: "jpg",
            png: false,
            unknown: "n00000000",
        },
        Benchmark::ObjectNet => LayoutInfo {
            classes: spread(labels::objectnet_classes(), n)
                .into_iter()
                .map(|c| c.folder.to_string())
                .collect(),
            ext: "png",
            png: true,
            unknown: "zz_not_an_objectnet_class",
        },
        _ => LayoutInfo {
            classes: spread(labels::si_score_classes(), n)
                .into_iter()
                .map(|c| c.folder.to_string())
                .collect(),
            ext: "jpg",
            png: false,
            unknown: "not a class",
        },
    }
}

/// Write `benchmark` in its native layout under `dir` (e.g. `dir/imagenet-a/`). Returns the
/// folder to open with [`crate::EvalDataset::open`] (for ObjectNet: `objectnet-1.0/`).
pub fn write_benchmark(
    benchmark: Benchmark,
    dir: &Path,
    spec: &SyntheticSpec,
) -> Result<Synthetic> {
    let root = dir.join(benchmark.default_dir());
    let info = layout(benchmark, spec.classes);
    let class_root = if benchmark == Benchmark::ObjectNet {
        root.join("images")
    } else {
        root.clone()
    };
    std::fs::create_dir_all(&class_root).map_err(io(&class_root))?;
    let mut planted = Planted::default();
    let mut good = 0;
    for (c, class) in info.classes.iter().enumerate() {
        for k in 0..spec.images_per_class {
            let img = pattern(spec.width + k as u32 * 3, spec.height + c as u32, c, k);
            let bytes = if info.png {
                encode_png(&image::DynamicImage::ImageRgb8(img))
            } else if k % 3 == 1 {
                encode_gray_jpeg(&img)
            } else if k % 3 == 2 && benchmark == Benchmark::ImageNetVal {
                // ImageNet ships a few PNGs named .JPEG; the decoder must sniff the content.
                encode_png(&image::DynamicImage::ImageRgba8(
                    image::DynamicImage::ImageRgb8(img).to_rgba8(),
                ))
            } else {
                encode_jpeg(&img)
            };
            write_bytes(
                &class_root
                    .join(class)
                    .join(format!("img_{c:02}_{k:03}.{}", info.ext)),
                &bytes,
            )?;
            good += 1;
        }
    }
    if benchmark == Benchmark::ObjectNet {
        // mappings/ as shipped: folder -> label for the written classes plus one non-ImageNet class.
        let mut map = serde_json::Map::new();
        for c in labels::objectnet_classes() {
            map.insert(c.folder.into(), c.label.into());
        }
        map.insert("air_freshener".into(), "Air freshener".into());
        let p = root.join("mappings/folder_to_objectnet_label.json");
        write_bytes(&p, serde_json::Value::Object(map).to_string().as_bytes())?;
    }
    if spec.bad_files {
        let first = class_root.join(&info.classes[0]);
        let readme = class_root.join("README.txt");
        write_bytes(&readme, b"This folder holds a benchmark.\n")?;
        planted.non_image_files.push(readme);
        if matches!(
            benchmark,
            Benchmark::SiScoreLocation | Benchmark::SiScoreRotation | Benchmark::SiScoreSize
        ) {
            let csv = class_root.join("metadata.csv");
            write_bytes(&csv, b"image,foreground\n")?;
            planted.non_image_files.push(csv);
        }
        let notes = first.join("notes.txt");
        write_bytes(&notes, b"not an image")?;
        planted.non_image_files.push(notes);
        let whole = if info.png {
            encode_png(&image::DynamicImage::ImageRgb8(pattern(
                spec.width,
                spec.height,
                9,
                9,
            )))
        } else {
            encode_jpeg(&pattern(spec.width, spec.height, 9, 9))
        };
        let trunc = first.join(format!("zz_truncated.{}", info.ext));
        write_bytes(&trunc, &whole[..whole.len() / 2])?;
        planted.truncated.push(trunc);
        let empty = first.join(format!("zz_empty.{}", info.ext));
        write_bytes(&empty, b"")?;
        planted.empty.push(empty);
        let unknown = class_root.join(info.unknown);
        write_bytes(&unknown.join(format!("x.{}", info.ext)), &whole)?;
        planted.unknown_class_folders.push(unknown);
        if benchmark == Benchmark::ObjectNet {
            let ex = class_root.join("air_freshener");
            write_bytes(&ex.join("x.png"), &whole)?;
            planted.excluded_class_folders.push("air_freshener".into());
        }
    }
    let mut classes = info.classes;
    classes.sort();
    Ok(Synthetic {
        root,
        classes,
        good_images: good,
        planted,
    })
}

/// A written ImageNet-S layout: `ImageNetS919/train-semi-segmentation` and `train-semi`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticImageNetS {
    /// `ImageNetS919/` (give it to [`crate::ImageNetS::from_root`]).
    pub root: PathBuf,
    pub masks: PathBuf,
    pub images: PathBuf,
    /// Usable wnids written, sorted.
    pub classes: Vec<String>,
    /// Valid (image, mask) pairs per class.
    pub pairs_per_class: usize,
    pub planted: Planted,
}

/// An ImageNet-S mask: foreground rectangle with `id`, a ring of ignore (1000) around it.
pub fn imagenet_s_mask(w: u32, h: u32, ids: &[u16]) -> RgbImage {
    let enc = |id: u16| Rgb([(id % 256) as u8, (id / 256) as u8, 0]);
    let mut m = RgbImage::from_pixel(w, h, enc(0));
    let (x0, y0, x1, y1) = (w / 4, h / 4, 3 * w / 4, 3 * h / 4);
    for y in y0.saturating_sub(2)..(y1 + 2).min(h) {
        for x in x0.saturating_sub(2)..(x1 + 2).min(w) {
            m.put_pixel(x, y, enc(crate::imagenet_s::IGNORE_ID));
        }
    }
    for (i, &id) in ids.iter().enumerate() {
        for y in y0..y1 {
            for x in x0..x1 {
                if (x - x0) as usize * ids.len() / (x1 - x0) as usize == i {
                    m.put_pixel(x, y, enc(id));
                }
            }
        }
    }
    m
}

/// Write ImageNet-S919 with `spec.classes` usable classes of `spec.images_per_class` pairs, a
/// merged-wnid folder, and (with `bad_files`) in the first class: a mask with two class ids, a
/// mask with none, a mask without image, an image without mask and a truncated image. The bad
/// files sort before the good ones, so a split must skip them.
pub fn write_imagenet_s(dir: &Path, spec: &SyntheticSpec) -> Result<SyntheticImageNetS> {
    let root = dir.join("ImageNetS919");
    let masks = root.join("train-semi-segmentation");
    let images = root.join("train-semi");
    let usable: Vec<labels::ImageNetSCategory> = labels::imagenet_s_categories()
        .iter()
        .copied()
        .filter(|c| c.usable)
        .collect();
    let cats = spread(&usable, spec.classes);
    let write_pair = |wnid: &str,
                      stem: &str,
                      id: &[u16],
                      c: usize,
                      k: usize,
                      image: bool,
                      mask: bool|
     -> Result<()> {
        let (w, h) = (spec.width + k as u32, spec.height + c as u32);
        if mask {
            let m = imagenet_s_mask(w, h, id);
            write_bytes(
                &masks.join(wnid).join(format!("{stem}.png")),
                &encode_png(&image::DynamicImage::ImageRgb8(m)),
            )?;
        }
        if image {
            write_bytes(
                &images.join(wnid).join(format!("{stem}.JPEG")),
                &encode_jpeg(&pattern(w, h, c, k)),
            )?;
        }
        Ok(())
    };
    for (c, cat) in cats.iter().enumerate() {
        for k in 0..spec.images_per_class {
            write_pair(
                cat.wnid,
                &format!("{}_{}", cat.wnid, 1000 + k),
                &[cat.mask_id],
                c,
                k,
                true,
                true,
            )?;
        }
    }
    // A merge-target folder, skipped as RobustViT does.
    let merged = labels::imagenet_s_categories()
        .iter()
        .find(|c| !c.usable)
        .expect("merged class");
    write_pair(
        merged.wnid,
        &format!("{}_1000", merged.wnid),
        &[merged.mask_id],
        0,
        0,
        true,
        true,
    )?;
    let mut planted = Planted::default();
    if spec.bad_files {
        let cat = cats[0];
        let w = cat.wnid;
        write_pair(
            w,
            &format!("{w}_0_twoids"),
            &[cat.mask_id, 7],
            0,
            0,
            true,
            true,
        )?;
        planted
            .bad_masks
            .push(masks.join(w).join(format!("{w}_0_twoids.png")));
        write_pair(w, &format!("{w}_0_zeroids"), &[], 0, 0, true, true)?;
        planted
            .bad_masks
            .push(masks.join(w).join(format!("{w}_0_zeroids.png")));
        write_pair(
            w,
            &format!("{w}_0_noimage"),
            &[cat.mask_id],
            0,
            0,
            false,
            true,
        )?;
        planted
            .missing_images
            .push(images.join(w).join(format!("{w}_0_noimage.JPEG")));
        write_pair(
            w,
            &format!("{w}_0_nomask"),
            &[cat.mask_id],
            0,
            0,
            true,
            false,
        )?;
        planted
            .missing_masks
            .push(images.join(w).join(format!("{w}_0_nomask.JPEG")));
        write_pair(
            w,
            &format!("{w}_0_truncated"),
            &[cat.mask_id],
            0,
            0,
            false,
            true,
        )?;
        let jpg = encode_jpeg(&pattern(spec.width, spec.height, 0, 0));
        let t = images.join(w).join(format!("{w}_0_truncated.JPEG"));
        write_bytes(&t, &jpg[..jpg.len() / 2])?;
        planted.truncated.push(t);
        let readme = masks.join("README.txt");
        write_bytes(&readme, b"ImageNet-S\n")?;
        planted.non_image_files.push(readme);
        let unknown = masks.join("n00000000");
        write_bytes(
            &unknown.join("x.png"),
            &encode_png(&image::DynamicImage::ImageRgb8(imagenet_s_mask(8, 8, &[1]))),
        )?;
        planted.unknown_class_folders.push(unknown);
    }
    let mut classes: Vec<String> = cats.iter().map(|c| c.wnid.to_string()).collect();
    classes.sort();
    Ok(SyntheticImageNetS {
        root,
        masks,
        images,
        classes,
        pairs_per_class: spec.images_per_class,
        planted,
    })
}

/// Write every benchmark (at its conventional folder) and ImageNet-S under `data_root`.
pub fn write_all(
    data_root: &Path,
    spec: &SyntheticSpec,
) -> Result<(Vec<Synthetic>, SyntheticImageNetS)> {
    let sets = Benchmark::ALL
        .iter()
        .map(|&b| write_benchmark(b, data_root, spec))
        .collect::<Result<Vec<_>>>()?;
    Ok((sets, write_imagenet_s(data_root, spec)?))
}
