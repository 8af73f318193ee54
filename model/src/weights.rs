//! Reading and writing safetensors checkpoints in timm naming, and mapping the Hugging Face
//! transformers ViT naming onto it. Only safetensors are ever read: no pickle runs.

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::vit::Params;
use crate::{ModelError, Result};

/// Tensor naming convention of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Naming {
    /// timm `VisionTransformer` state-dict names (`blocks.0.attn.qkv.weight`, ...).
    Timm,
    /// transformers `ViTForImageClassification` (`vit.encoder.layer.0.attention...`).
    Transformers,
}

impl Naming {
    /// Guesses the convention from the tensor names.
    pub fn detect<'a>(mut names: impl Iterator<Item = &'a String>) -> Self {
        if names.any(|n| n.contains("embeddings.cls_token") || n.contains("encoder.layer.")) {
            Naming::Transformers
        } else {
            Naming::Timm
        }
    }
}

/// Reads every tensor of a safetensors file, with errors that name the file.
pub fn read_safetensors(path: &Path, device: &Device) -> Result<BTreeMap<String, Tensor>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if matches!(ext, "bin" | "pth" | "pt" | "ckpt" | "pkl" | "tar") {
        return Err(ModelError::Weights {
            path: path.to_path_buf(),
            msg: "is a PyTorch pickle; only .safetensors files are read (pickles can run code). \
                  Convert it once in Python with safetensors.torch.save_file(state_dict, 'model.safetensors')"
                .into(),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| ModelError::Weights {
        path: path.to_path_buf(),
        msg: format!("cannot be read: {e}"),
    })?;
    // Parse the header first so that a truncated download gets a precise message.
    safetensors::SafeTensors::deserialize(&bytes).map_err(|e| ModelError::Weights {
        path: path.to_path_buf(),
        msg: format!(
            "is not a valid safetensors file ({e}); it may be truncated by an interrupted \
             download: delete it and fetch it again"
        ),
    })?;
    let map =
        candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| ModelError::Weights {
            path: path.to_path_buf(),
            msg: format!("could not be decoded: {e}"),
        })?;
    Ok(map.into_iter().collect())
}

/// Maps transformers ViT names to timm names; query/key/value are concatenated into `qkv`.
pub fn transformers_to_timm(
    mut t: BTreeMap<String, Tensor>,
    source: &str,
) -> Result<BTreeMap<String, Tensor>> {
    // ViTModel checkpoints have no `vit.` prefix; ViTForImageClassification has one.
    let prefix = if t.keys().any(|k| k.starts_with("vit.")) {
        "vit."
    } else {
        ""
    };
    let mut out = BTreeMap::new();
    let mut take = |from: &str, to: &str, t: &mut BTreeMap<String, Tensor>| -> Result<()> {
        let v = t.remove(from).ok_or_else(|| ModelError::MissingTensor {
            name: from.to_string(),
            origin: source.to_string(),
        })?;
        out.insert(to.to_string(), v);
        Ok(())
    };
    let p = |s: &str| format!("{prefix}{s}");
    take(&p("embeddings.cls_token"), "cls_token", &mut t)?;
    take(&p("embeddings.position_embeddings"), "pos_embed", &mut t)?;
    for s in ["weight", "bias"] {
        take(
            &p(&format!("embeddings.patch_embeddings.projection.{s}")),
            &format!("patch_embed.proj.{s}"),
            &mut t,
        )?;
        take(&p(&format!("layernorm.{s}")), &format!("norm.{s}"), &mut t)?;
        take(&format!("classifier.{s}"), &format!("head.{s}"), &mut t)?;
    }
    let depth = t
        .keys()
        .filter_map(|k| k.strip_prefix(&p("encoder.layer.")))
        .filter_map(|r| r.split('.').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |m| m + 1);
    let mut qkv = BTreeMap::new();
    for i in 0..depth {
        let l = |s: &str| p(&format!("encoder.layer.{i}.{s}"));
        let b = |s: &str| format!("blocks.{i}.{s}");
        for s in ["weight", "bias"] {
            take(
                &l(&format!("layernorm_before.{s}")),
                &b(&format!("norm1.{s}")),
                &mut t,
            )?;
            take(
                &l(&format!("attention.output.dense.{s}")),
                &b(&format!("attn.proj.{s}")),
                &mut t,
            )?;
            take(
                &l(&format!("layernorm_after.{s}")),
                &b(&format!("norm2.{s}")),
                &mut t,
            )?;
            take(
                &l(&format!("intermediate.dense.{s}")),
                &b(&format!("mlp.fc1.{s}")),
                &mut t,
            )?;
            take(
                &l(&format!("output.dense.{s}")),
                &b(&format!("mlp.fc2.{s}")),
                &mut t,
            )?;
            let mut parts = Vec::with_capacity(3);
            for qkv_name in ["query", "key", "value"] {
                let name = l(&format!("attention.attention.{qkv_name}.{s}"));
                parts.push(t.remove(&name).ok_or_else(|| ModelError::MissingTensor {
                    name: name.clone(),
                    origin: source.to_string(),
                })?);
            }
            qkv.insert(b(&format!("attn.qkv.{s}")), Tensor::cat(&parts, 0)?);
        }
    }
    out.extend(qkv);
    // Pooler weights belong to ViTModel's unused pre-logits head; anything else is unexpected.
    t.retain(|k, _| !k.starts_with(&p("pooler.")));
    out.extend(t);
    Ok(out)
}

/// Writes tensors as safetensors atomically ([`write_atomic`]), so an interrupted write never
/// leaves a truncated checkpoint behind.
pub fn write_safetensors(tensors: &BTreeMap<String, Tensor>, path: &Path) -> Result<()> {
    write_safetensors_with_metadata(tensors, path, &BTreeMap::new())
}

/// [`write_safetensors`] with extra header metadata (besides `format = pt`).
pub fn write_safetensors_with_metadata(
    tensors: &BTreeMap<String, Tensor>,
    path: &Path,
    extra: &BTreeMap<String, String>,
) -> Result<()> {
    let wrap = |e: std::io::Error| ModelError::Weights {
        path: path.to_path_buf(),
        msg: format!("cannot be written: {e}"),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(wrap)?;
    }
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_>>()?;
    let mut meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    meta.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    let bytes =
        safetensors::tensor::serialize(cpu.iter().map(|(k, v)| (k.as_str(), v)), Some(meta))
            .map_err(|e| ModelError::Weights {
                path: path.to_path_buf(),
                msg: format!("cannot be serialised: {e}"),
            })?;
    write_atomic(path, &canonical_header(bytes)).map_err(wrap)
}

/// Writes `bytes` to `path` atomically: a uniquely named temporary file in the same folder
/// (created if missing), flushed to disk, then renamed over `path`. An interrupted write never
/// leaves a truncated file, and concurrent writers never share a temporary file. Every file the
/// workspace writes (checkpoints, optimizer state, tables, pictures) goes through here.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Rewrites a safetensors header with sorted keys. The serialiser writes its metadata map in
/// hash order, so the same tensors would otherwise give different bytes (and checksums) on
/// every save. Offsets in the header are relative to its end, so they stay valid.
fn canonical_header(bytes: Vec<u8>) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8-byte length")) as usize;
    let Ok(header) = serde_json::from_slice::<serde_json::Value>(&bytes[8..8 + n]) else {
        return bytes;
    };
    // serde_json's map is ordered by key.
    let mut h = serde_json::to_vec(&header).expect("a JSON value serialises");
    while (8 + h.len()) % 8 != 0 {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

/// Saves the parameters with timm names; `timm.create_model(...).load_state_dict(
/// safetensors.torch.load_file(path))` accepts the file as is.
pub fn save_params(params: &Params, path: &Path) -> Result<()> {
    write_safetensors(&params.snapshot()?, path)
}

/// Header key holding the architecture (a `VitConfig` as JSON), so that a checkpoint of a
/// model without a hub config (one trained from scratch, say) loads on its own.
pub const CONFIG_METADATA_KEY: &str = "robustvit.vit_config";

/// Header key holding the preprocessing (a `PretrainedCfg` as JSON) of the model a finetuned
/// checkpoint started from, so that the bare file is evaluated as its model was.
pub const PRETRAINED_METADATA_KEY: &str = "robustvit.pretrained_cfg";

/// Saves a model with timm names and its architecture in the header metadata, plus `extra`.
pub fn save_model(vit: &crate::Vit, path: &Path, extra: &BTreeMap<String, String>) -> Result<()> {
    let mut meta = extra.clone();
    meta.insert(
        CONFIG_METADATA_KEY.to_string(),
        serde_json::to_string(vit.config()).expect("VitConfig serialises"),
    );
    write_safetensors_with_metadata(&vit.params().snapshot()?, path, &meta)
}

/// The header metadata of a safetensors file (empty when it has none).
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let err = |msg: String| ModelError::Weights {
        path: path.to_path_buf(),
        msg,
    };
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| err(format!("cannot be read: {e}")))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|e| err(format!("is too short to be safetensors: {e}")))?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        return Err(err(
            "has an implausible header; it may be truncated or not safetensors".into(),
        ));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| err(format!("has a truncated header: {e}")))?;
    let v: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| err(format!("has an unreadable header: {e}")))?;
    Ok(v.get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default())
}
