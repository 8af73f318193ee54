//! Result tables (`robustness.csv`, `segmentation.csv`).
//!
//! Each table is keyed by a few text columns; [`merge_rows`] replaces rows with the
//! same key instead of appending, sorts by key and writes through a temporary file in
//! the same folder followed by a rename, so an interrupted run never leaves a
//! half-written table and re-running an evaluation gives the same bytes (apart from
//! the `date` column). Floats are written with a fixed number of decimals for the
//! same reason.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Why a table or checkpoint could not be read or written.
#[derive(Debug, Error)]
pub enum ResultsError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{}: header is {found:?} but this table needs {expected:?}; it was written by another \
         version or by hand. Move it away (it is left untouched) and re-run",
        .path.display()
    )]
    Header {
        path: PathBuf,
        found: Vec<String>,
        expected: Vec<String>,
    },
    #[error(
        "{}: cannot parse the table ({source}); fix or move the file away (it is left untouched) \
         and re-run",
        .path.display()
    )]
    Corrupt { path: PathBuf, source: csv::Error },
    #[error(
        "{}: key {key:?} appears twice; this table never holds duplicates, so it was edited by \
         hand. Remove one of the rows (the file is left untouched) and re-run",
        .path.display()
    )]
    DuplicateKey { path: PathBuf, key: Vec<String> },
    #[error("{}: writing the table: {source}", .path.display())]
    Write { path: PathBuf, source: csv::Error },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ResultsError + '_ {
    move |source| ResultsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A row of a keyed result table.
pub trait TableRow: Serialize + DeserializeOwned + Clone {
    /// Column names in serialisation order (checked against the file header).
    const HEADER: &'static [&'static str];
    /// The values identifying the row; a new row with the same key replaces the old one.
    fn key(&self) -> Vec<String>;
}

fn fmt3<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:.3}"))
}

fn fmt1<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:.1}"))
}

/// One robustness evaluation: accuracies in percent with 3 decimals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RobustnessRow {
    pub model: String,
    /// Checkpoint name (`pretrained` for the original weights, or a file name).
    pub checkpoint: String,
    /// First 12 hex characters of the checkpoint's SHA-256 ([`sha256_prefix`]).
    pub checkpoint_sha256: String,
    pub dataset: String,
    /// Label protocol, e.g. `paper` (1000-way argmax) or `official` (class masks).
    pub protocol: String,
    pub images: u64,
    #[serde(serialize_with = "fmt3")]
    pub top1: f64,
    #[serde(serialize_with = "fmt3")]
    pub top5: f64,
    #[serde(serialize_with = "fmt3")]
    pub top1_err: f64,
    #[serde(serialize_with = "fmt3")]
    pub top5_err: f64,
    #[serde(serialize_with = "fmt1")]
    pub images_per_s: f64,
    pub date: String,
    pub git_rev: String,
}

impl TableRow for RobustnessRow {
    const HEADER: &'static [&'static str] = &[
        "model",
        "checkpoint",
        "checkpoint_sha256",
        "dataset",
        "protocol",
        "images",
        "top1",
        "top5",
        "top1_err",
        "top5_err",
        "images_per_s",
        "date",
        "git_rev",
    ];
    fn key(&self) -> Vec<String> {
        vec![
            self.model.clone(),
            self.checkpoint.clone(),
            self.dataset.clone(),
            self.protocol.clone(),
        ]
    }
}

/// One segmentation test: metrics in percent with 3 decimals
/// (the [`crate::metrics::SegResult`] fractions × 100, as the papers report them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentationRow {
    pub model: String,
    pub checkpoint: String,
    pub checkpoint_sha256: String,
    /// `imagenet-seg` (gtsegs_ijcv.mat) or the name of a `--seg-folder`.
    pub dataset: String,
    /// Relevance method, e.g. `relevance` (the paper's relevance map).
    pub explainer: String,
    pub images: u64,
    #[serde(serialize_with = "fmt3")]
    pub pixel_acc: f64,
    #[serde(serialize_with = "fmt3")]
    pub miou: f64,
    #[serde(serialize_with = "fmt3")]
    pub map: f64,
    #[serde(serialize_with = "fmt3")]
    pub mass_acc: f64,
    #[serde(serialize_with = "fmt3")]
    pub pointing: f64,
    pub date: String,
    pub git_rev: String,
}

impl TableRow for SegmentationRow {
    const HEADER: &'static [&'static str] = &[
        "model",
        "checkpoint",
        "checkpoint_sha256",
        "dataset",
        "explainer",
        "images",
        "pixel_acc",
        "miou",
        "map",
        "mass_acc",
        "pointing",
        "date",
        "git_rev",
    ];
    fn key(&self) -> Vec<String> {
        vec![
            self.model.clone(),
            self.checkpoint.clone(),
            self.dataset.clone(),
            self.explainer.clone(),
        ]
    }
}

/// Reads a table; a missing file is an empty table.
pub fn read_rows<R: TableRow>(path: &Path) -> Result<Vec<R>, ResultsError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(path)(e)),
    };
    let corrupt = |source| ResultsError::Corrupt {
        path: path.to_owned(),
        source,
    };
    let mut reader = csv::Reader::from_reader(BufReader::new(file));
    let found: Vec<String> = reader
        .headers()
        .map_err(corrupt)?
        .iter()
        .map(str::to_owned)
        .collect();
    if found != R::HEADER {
        return Err(ResultsError::Header {
            path: path.to_owned(),
            found,
            expected: R::HEADER.iter().map(|s| s.to_string()).collect(),
        });
    }
    reader
        .deserialize()
        .collect::<Result<Vec<R>, _>>()
        .map_err(corrupt)
}

/// Merges `new_rows` into the table at `path` (created with its folder if missing):
/// rows with an existing key replace the old row, later rows of `new_rows` win over
/// earlier ones, and the table is written sorted by key through a temporary file and
/// a rename. An unreadable existing table is an error and is left untouched.
pub fn merge_rows<R: TableRow>(path: &Path, new_rows: &[R]) -> Result<(), ResultsError> {
    let mut table: BTreeMap<Vec<String>, R> = BTreeMap::new();
    for row in read_rows::<R>(path)? {
        let key = row.key();
        if table.insert(key.clone(), row).is_some() {
            return Err(ResultsError::DuplicateKey {
                path: path.to_owned(),
                key,
            });
        }
    }
    for row in new_rows {
        table.insert(row.key(), row.clone());
    }
    write_rows(path, table.values())
}

fn write_rows<'a, R: TableRow + 'a>(
    path: &Path,
    rows: impl Iterator<Item = &'a R>,
) -> Result<(), ResultsError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".results-")
        .suffix(".csv.tmp")
        .tempfile_in(&dir)
        .map_err(io_err(&dir))?;
    {
        let write_err = |source| ResultsError::Write {
            path: path.to_owned(),
            source,
        };
        let mut writer = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(tmp.as_file_mut());
        writer.write_record(R::HEADER).map_err(write_err)?;
        for row in rows {
            writer.serialize(row).map_err(write_err)?;
        }
        writer.flush().map_err(io_err(path))?;
    }
    tmp.as_file().sync_all().map_err(io_err(path))?;
    tmp.persist(path).map_err(|e| io_err(path)(e.error))?;
    Ok(())
}

/// First 12 hex characters of the SHA-256 of a file, read in 1 MiB blocks so that
/// multi-GB checkpoints are not loaded into memory. Identifies which weights a row of
/// a result table was measured with.
pub fn sha256_prefix(path: &Path) -> Result<String, ResultsError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let digest = hasher.finalize();
    Ok(digest[..6].iter().map(|b| format!("{b:02x}")).collect())
}

/// `YYYY-MM-DD` (UTC) of a time, for the `date` column.
pub fn utc_date(t: SystemTime) -> String {
    report::utc_timestamp(t)[..10].to_owned()
}

/// The revision of the code that produced a result row: baked into the binary at build time
/// (short commit hash, `-dirty` when tracked files were modified, `unknown` outside a git
/// checkout), so a copied binary or one built before a `git pull` records its own.
pub fn git_rev() -> String {
    report::REVISION.to_owned()
}

/// Writes `text` to `path` atomically (temporary file in the same folder, then rename);
/// for small side outputs such as a summary next to the tables.
pub fn write_atomic(path: &Path, text: &[u8]) -> Result<(), ResultsError> {
    model::weights::write_atomic(path, text).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rob(dataset: &str, top1: f64, date: &str) -> RobustnessRow {
        RobustnessRow {
            model: "vit_base".into(),
            checkpoint: "pretrained".into(),
            checkpoint_sha256: "0123456789ab".into(),
            dataset: dataset.into(),
            protocol: "paper".into(),
            images: 7500,
            top1,
            top5: 40.0,
            top1_err: 100.0 - top1,
            top5_err: 60.0,
            images_per_s: 812.345,
            date: date.into(),
            git_rev: "abc".into(),
        }
    }

    #[test]
    fn header_constants_match_serde_field_order() {
        let mut w = csv::Writer::from_writer(vec![]);
        w.serialize(rob("a", 1.0, "d")).unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert_eq!(
            text.lines().next().unwrap(),
            RobustnessRow::HEADER.join(",")
        );
        let seg = SegmentationRow {
            model: "m".into(),
            checkpoint: "c".into(),
            checkpoint_sha256: "s".into(),
            dataset: "imagenet-seg".into(),
            explainer: "e".into(),
            images: 1,
            pixel_acc: 1.0,
            miou: 1.0,
            map: 1.0,
            mass_acc: 1.0,
            pointing: 1.0,
            date: "d".into(),
            git_rev: "g".into(),
        };
        let mut w = csv::Writer::from_writer(vec![]);
        w.serialize(seg).unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert_eq!(
            text.lines().next().unwrap(),
            SegmentationRow::HEADER.join(",")
        );
    }

    #[test]
    fn writes_sorted_fixed_decimals_and_merging_twice_is_identical() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/robustness.csv");
        let rows = [
            rob("imagenet_r", 35.123_456, "2024-01-01"),
            rob("imagenet_a", 20.65, "2024-01-01"),
        ];
        merge_rows(&path, &rows).unwrap();
        let first = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            first,
            "model,checkpoint,checkpoint_sha256,dataset,protocol,images,top1,top5,top1_err,\
             top5_err,images_per_s,date,git_rev\n\
             vit_base,pretrained,0123456789ab,imagenet_a,paper,7500,20.650,40.000,79.350,60.000,\
             812.3,2024-01-01,abc\n\
             vit_base,pretrained,0123456789ab,imagenet_r,paper,7500,35.123,40.000,64.877,60.000,\
             812.3,2024-01-01,abc\n"
        );
        merge_rows(&path, &rows).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
        // Merging nothing rewrites the same bytes too (values survive the 3-decimal round trip).
        merge_rows::<RobustnessRow>(&path, &[]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
        // No temporary file left behind.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn same_key_replaces_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("robustness.csv");
        merge_rows(
            &path,
            &[rob("imagenet_a", 20.0, "d1"), rob("sketch", 35.0, "d1")],
        )
        .unwrap();
        let mut other_protocol = rob("imagenet_a", 30.0, "d2");
        other_protocol.protocol = "official".into();
        merge_rows(&path, &[rob("imagenet_a", 21.5, "d2"), other_protocol]).unwrap();
        let rows: Vec<RobustnessRow> = read_rows(&path).unwrap();
        let summary: Vec<(&str, &str, f64, &str)> = rows
            .iter()
            .map(|r| {
                (
                    r.dataset.as_str(),
                    r.protocol.as_str(),
                    r.top1,
                    r.date.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("imagenet_a", "official", 30.0, "d2"),
                ("imagenet_a", "paper", 21.5, "d2"),
                ("sketch", "paper", 35.0, "d1"),
            ]
        );
    }

    #[test]
    fn corrupt_table_is_an_error_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("robustness.csv");
        merge_rows(&path, &[rob("imagenet_a", 20.0, "d")]).unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text = text.replace("20.000", "twenty");
        std::fs::write(&path, &text).unwrap();
        let err = merge_rows(&path, &[rob("sketch", 35.0, "d")]).unwrap_err();
        assert!(matches!(err, ResultsError::Corrupt { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);

        std::fs::write(&path, "a,b\n1,2\n").unwrap();
        let err = merge_rows(&path, &[rob("sketch", 35.0, "d")]).unwrap_err();
        assert!(matches!(err, ResultsError::Header { .. }), "{err}");
        assert!(err.to_string().contains("robustness.csv"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a,b\n1,2\n");
    }

    #[test]
    fn duplicate_keys_in_existing_table_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("robustness.csv");
        merge_rows(&path, &[rob("imagenet_a", 20.0, "d")]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let row = text.lines().nth(1).unwrap().to_owned();
        std::fs::write(&path, format!("{text}{row}\n")).unwrap();
        let err = merge_rows::<RobustnessRow>(&path, &[]).unwrap_err();
        assert!(matches!(err, ResultsError::DuplicateKey { .. }), "{err}");
    }

    #[test]
    fn segmentation_table_keyed_by_dataset_and_explainer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segmentation.csv");
        let row = |explainer: &str, miou: f64| SegmentationRow {
            model: "vit_base".into(),
            checkpoint: "pretrained".into(),
            checkpoint_sha256: "0123456789ab".into(),
            dataset: "imagenet-seg".into(),
            explainer: explainer.into(),
            images: 4276,
            pixel_acc: 79.7,
            miou,
            map: 86.03,
            mass_acc: 55.5556,
            pointing: 90.0,
            date: "2024-01-01".into(),
            git_rev: "abc".into(),
        };
        merge_rows(&path, &[row("rollout", 50.0), row("robustvit", 61.95)]).unwrap();
        merge_rows(&path, &[row("rollout", 51.0)]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        // Byte order of the key: "robustvit" < "rollout" ('b' < 'l').
        assert_eq!(
            text.lines().skip(1).collect::<Vec<_>>(),
            vec![
                "vit_base,pretrained,0123456789ab,imagenet-seg,robustvit,4276,79.700,61.950,86.030,55.556,90.000,2024-01-01,abc",
                "vit_base,pretrained,0123456789ab,imagenet-seg,rollout,4276,79.700,51.000,86.030,55.556,90.000,2024-01-01,abc",
            ]
        );
    }

    #[test]
    fn sha256_prefix_of_known_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.bin");
        std::fs::write(&path, b"abc").unwrap();
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad.
        assert_eq!(sha256_prefix(&path).unwrap(), "ba7816bf8f01");
        // Larger than one read block.
        std::fs::write(&path, vec![0u8; (1 << 20) + 5]).unwrap();
        let whole = Sha256::digest(vec![0u8; (1 << 20) + 5]);
        let expected: String = whole[..6].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(sha256_prefix(&path).unwrap(), expected);
        let err = sha256_prefix(&dir.path().join("missing.safetensors")).unwrap_err();
        assert!(err.to_string().contains("missing.safetensors"));
    }

    #[test]
    fn utc_date_of_known_instants() {
        let at = |s: u64| utc_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01");
        // 2000-02-29T12:00:00Z = 951825600.
        assert_eq!(at(951_825_600), "2000-02-29");
        // 2024-12-31T23:59:59Z = 1735689599.
        assert_eq!(at(1_735_689_599), "2024-12-31");
    }

    #[test]
    fn atomic_text_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("note.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
