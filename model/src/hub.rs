//! Finding weights: a local file, a local folder, or a Hugging Face hub repository (cache
//! first, in the same layout as Python's cache, then download unless offline).

use candle_core::Device;
use std::path::{Path, PathBuf};

use crate::config::{parse_config_json, PretrainedCfg, VitConfig};
use crate::variants::{variant, Variant};
use crate::vit::Vit;
use crate::weights::{read_safetensors, transformers_to_timm, Naming};
use crate::{ModelError, Result};

/// Where the hub cache is and whether the network may be used.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// The `hub` folder of the cache (`$HF_HOME/hub`, default `~/.cache/huggingface/hub`).
    pub cache_dir: PathBuf,
    /// Never touch the network (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Show a progress bar while downloading.
    pub progress: bool,
}

impl HubOptions {
    /// Reads `HF_HOME`, `HF_HUB_CACHE` and `HF_HUB_OFFLINE` like the Python client.
    pub fn from_env() -> Self {
        let cache_dir = if let Some(c) = std::env::var_os("HF_HUB_CACHE") {
            PathBuf::from(c)
        } else if let Some(h) = std::env::var_os("HF_HOME") {
            PathBuf::from(h).join("hub")
        } else {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache").join("huggingface").join("hub")
        };
        let offline = std::env::var("HF_HUB_OFFLINE")
            .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
            .unwrap_or(false);
        Self {
            cache_dir,
            offline,
            progress: true,
        }
    }
}

/// A parsed `--weights` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsSource {
    File(PathBuf),
    /// A folder with `model.safetensors` and optionally `config.json`.
    Dir(PathBuf),
    Hub {
        repo: String,
        revision: String,
    },
}

impl WeightsSource {
    /// A path that exists is local; otherwise `org/name[@revision]` is a hub id.
    pub fn parse(spec: &str) -> Result<Self> {
        let p = Path::new(spec);
        if p.is_dir() {
            return Ok(Self::Dir(p.to_path_buf()));
        }
        if p.is_file() {
            return Ok(Self::File(p.to_path_buf()));
        }
        let (repo, rev) = match spec.split_once('@') {
            Some((r, v)) => (r, v.to_string()),
            None => (spec, "main".to_string()),
        };
        let looks_like_repo = repo.split('/').count() == 2
            && !repo.starts_with('/')
            && !repo.starts_with('.')
            && !repo.ends_with(".safetensors");
        if !looks_like_repo || rev.is_empty() {
            return Err(ModelError::WeightsNotFound(format!(
                "`{spec}` is neither an existing file or folder nor a hub id like org/name[@revision]"
            )));
        }
        Ok(Self::Hub {
            repo: repo.to_string(),
            revision: rev,
        })
    }
}

/// Returns the path of `filename` in a hub repository, from the cache or downloaded.
pub fn hub_file(repo: &str, revision: &str, filename: &str, opts: &HubOptions) -> Result<PathBuf> {
    let r = hf_hub::Repo::with_revision(
        repo.to_string(),
        hf_hub::RepoType::Model,
        revision.to_string(),
    );
    let cache = hf_hub::Cache::new(opts.cache_dir.clone());
    if let Some(p) = cache.repo(r.clone()).get(filename) {
        return Ok(p);
    }
    let looked = opts
        .cache_dir
        .join(r.folder_name())
        .join("snapshots")
        .join(format!("<commit in refs/{revision}>"))
        .join(filename);
    if opts.offline {
        // `offline` is also set by callers that must not download (evaluate --check).
        let (why, what_to_do) = if HubOptions::from_env().offline {
            (
                "HF_HUB_OFFLINE is set",
                "Download it on a machine with network (or unset HF_HUB_OFFLINE), or give",
            )
        } else {
            (
                "this run only looks in the cache",
                "A run that may download fetches it; or give",
            )
        };
        return Err(ModelError::WeightsNotFound(format!(
            "{filename} of {repo}@{revision} is not in the cache and {why}; looked for {}. \
             {what_to_do} a local copy of the weights (train --weights, evaluate --checkpoint)",
            looked.display()
        )));
    }
    let api = hf_hub::api::sync::ApiBuilder::from_cache(cache)
        .with_progress(opts.progress)
        .build()
        .map_err(|e| ModelError::Hub(format!("cannot start the hub client: {e}")))?;
    api.repo(r).get(filename).map_err(|e| {
        ModelError::Hub(format!(
            "downloading {filename} of {repo}@{revision} failed: {e} (cache: {}; set HF_HUB_OFFLINE=1 to use only the cache)",
            opts.cache_dir.display()
        ))
    })
}

/// Where [`load`] takes the weights of `name` / `weights` from, in words, for the first lines
/// of a run's log: a local file or folder, or a hub repository and its cache folder.
pub fn describe_source(name: Option<&str>, weights: Option<&str>, opts: &HubOptions) -> String {
    let source = match (weights, name.map(variant)) {
        (Some(w), _) => WeightsSource::parse(w),
        (None, Some(Ok(v))) => Ok(WeightsSource::Hub {
            repo: v.hub_repo.to_string(),
            revision: v.revision.unwrap_or("main").to_string(),
        }),
        (None, Some(Err(e))) => Err(e),
        (None, None) => return "none given".into(),
    };
    match source {
        Ok(WeightsSource::File(p)) => format!("local file {}", p.display()),
        Ok(WeightsSource::Dir(p)) => format!("local folder {}", p.display()),
        Ok(WeightsSource::Hub { repo, revision }) => {
            let r = hf_hub::Repo::with_revision(
                repo.clone(),
                hf_hub::RepoType::Model,
                revision.clone(),
            );
            format!(
                "hub {repo}@{revision} (cache {}{})",
                opts.cache_dir.join(r.folder_name()).display(),
                if opts.offline { ", offline" } else { "" }
            )
        }
        Err(e) => format!("unresolved ({e})"),
    }
}

/// A model ready to use, with what is known about its preprocessing.
pub struct LoadedModel {
    pub vit: Vit,
    /// The checkpoint's own preprocessing, from its `config.json` when there is one.
    pub pretrained: PretrainedCfg,
    pub weights_path: PathBuf,
    pub naming: Naming,
}

/// Reads a model `config.json`. Beside a single weights file (a training run folder, say) a
/// `config.json` that is not a model config is someone else's file and is ignored.
fn read_config(path: &Path, lenient: bool) -> Result<Option<crate::config::ParsedConfig>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::BadConfigFile {
        path: path.to_path_buf(),
        msg: format!("cannot be read: {e}"),
    })?;
    if lenient {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if v.get("architecture").is_none() && v.get("hidden_size").is_none() {
            return Ok(None);
        }
    }
    parse_config_json(&text, path).map(Some)
}

/// Loads a model by name (one of the seven paper models) and/or `--weights` spec.
///
/// * `name` only: the variant's pretrained weights from the hub.
/// * `weights` only: a file, folder or hub id; the architecture comes from the `config.json`
///   beside the weights.
/// * both: the weights (e.g. a finetuned checkpoint) with the variant's architecture unless a
///   `config.json` beside them says otherwise.
pub fn load(
    name: Option<&str>,
    weights: Option<&str>,
    opts: &HubOptions,
    device: &Device,
) -> Result<LoadedModel> {
    let (var, source, weights_path, config_path) = locate(name, weights, opts)?;
    let parsed = read_config(&config_path, matches!(source, WeightsSource::File(_)))?;
    let tensors = read_safetensors(&weights_path, &Device::Cpu)?;
    let naming = Naming::detect(tensors.keys());
    let src = weights_path.display().to_string();
    let tensors = match naming {
        Naming::Timm => tensors,
        Naming::Transformers => transformers_to_timm(tensors, &src)?,
    };
    let metadata = crate::weights::read_metadata(&weights_path)?;
    let embedded = metadata
        .get(crate::weights::CONFIG_METADATA_KEY)
        .map(|j| {
            serde_json::from_str::<VitConfig>(j).map_err(|e| ModelError::Weights {
                path: weights_path.clone(),
                msg: format!("has an unreadable architecture in its metadata: {e}"),
            })
        })
        .transpose()?;
    let cfg: VitConfig = match (&parsed, embedded, var) {
        (Some(p), _, _) => p.vit.clone(),
        (None, Some(c), _) => c,
        (None, None, Some(v)) => v.config(),
        (None, None, None) => {
            return Err(ModelError::WeightsNotFound(format!(
                "no config.json beside {src} and no model name: say which architecture it is (e.g. --model augreg-base)"
            )))
        }
    };
    let pretrained = choose_pretrained(
        parsed.and_then(|p| p.pretrained),
        &metadata,
        &weights_path,
        var,
        cfg.img_size,
    )?;
    let vit = Vit::from_tensors(&cfg, tensors, device, &src)?;
    Ok(LoadedModel {
        vit,
        pretrained,
        weights_path,
        naming,
    })
}

/// The preprocessing of a model, in order of preference: the `config.json` beside the weights
/// (a hub folder), the preprocessing recorded in the weights file's metadata (a finetuned
/// checkpoint records the one its training started from), the named variant's own, and
/// otherwise Inception-style 0.5/0.5 with crop 0.9.
fn choose_pretrained(
    from_config: Option<PretrainedCfg>,
    metadata: &std::collections::HashMap<String, String>,
    weights_path: &Path,
    var: Option<&Variant>,
    img_size: usize,
) -> Result<PretrainedCfg> {
    if let Some(p) = from_config {
        return Ok(p);
    }
    if let Some(j) = metadata.get(crate::weights::PRETRAINED_METADATA_KEY) {
        return serde_json::from_str::<PretrainedCfg>(j).map_err(|e| ModelError::Weights {
            path: weights_path.to_path_buf(),
            msg: format!("has unreadable preprocessing in its metadata: {e}"),
        });
    }
    Ok(var
        .map(|v| v.native_pretrained_cfg())
        .unwrap_or_else(|| PretrainedCfg::inception(img_size)))
}

/// The preprocessing [`load`] would report for the same arguments, without reading the weights
/// (only the config and the weights file's header); what a training run records.
pub fn pretrained_cfg(
    name: Option<&str>,
    weights: Option<&str>,
    opts: &HubOptions,
) -> Result<PretrainedCfg> {
    let (var, source, weights_path, config_path) = locate(name, weights, opts)?;
    let parsed = read_config(&config_path, matches!(source, WeightsSource::File(_)))?;
    let metadata = crate::weights::read_metadata(&weights_path)?;
    let img_size = parsed
        .as_ref()
        .map(|p| p.vit.img_size)
        .or_else(|| {
            metadata
                .get(crate::weights::CONFIG_METADATA_KEY)
                .and_then(|j| serde_json::from_str::<VitConfig>(j).ok())
                .map(|c| c.img_size)
        })
        .or_else(|| var.map(|v| v.config().img_size))
        .unwrap_or(224);
    choose_pretrained(
        parsed.and_then(|p| p.pretrained),
        &metadata,
        &weights_path,
        var,
        img_size,
    )
}

type Located = (Option<&'static Variant>, WeightsSource, PathBuf, PathBuf);

/// The weights file and the config path beside it for `load`'s arguments.
fn locate(name: Option<&str>, weights: Option<&str>, opts: &HubOptions) -> Result<Located> {
    let var: Option<&'static Variant> = name.map(variant).transpose()?;
    let source = match (weights, var) {
        (Some(w), _) => WeightsSource::parse(w)?,
        (None, Some(v)) => WeightsSource::Hub {
            repo: v.hub_repo.to_string(),
            revision: v.revision.unwrap_or("main").to_string(),
        },
        (None, None) => {
            return Err(ModelError::WeightsNotFound(
                "give a model name (e.g. augreg-base) or --weights".into(),
            ))
        }
    };
    let (weights_path, config_path) = match &source {
        WeightsSource::File(p) => (p.clone(), p.with_file_name("config.json")),
        WeightsSource::Dir(d) => {
            let w = d.join("model.safetensors");
            if !w.is_file() {
                return Err(ModelError::WeightsNotFound(format!(
                    "folder {} has no model.safetensors",
                    d.display()
                )));
            }
            (w, d.join("config.json"))
        }
        WeightsSource::Hub { repo, revision } => {
            let w = hub_file(repo, revision, "model.safetensors", opts)?;
            // A missing config is not fatal when the variant fixes the architecture.
            let c = match hub_file(repo, revision, "config.json", opts) {
                Ok(c) => c,
                Err(e) if var.is_none() => return Err(e),
                Err(_) => PathBuf::new(),
            };
            (w, c)
        }
    };
    Ok((var, source, weights_path, config_path))
}
