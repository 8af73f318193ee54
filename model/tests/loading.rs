//! Loading from files, folders and an offline hub cache in both namings, saving, and every
//! loading error.

use candle_core::{Device, Tensor};
use model::weights::{read_safetensors, write_safetensors};
use model::{HubOptions, ModelError, Vit, VitConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn tiny() -> VitConfig {
    let mut c = VitConfig::vit(32, 2, 2, 32, 8);
    c.num_classes = 10;
    c
}

fn timm_config_json(cfg: &VitConfig) -> String {
    format!(
        r#"{{"architecture": "vit_tiny_patch16_224", "num_classes": {nc},
        "model_args": {{"img_size": {img}, "patch_size": {p}, "embed_dim": {d}, "depth": {depth},
        "num_heads": {h}, "num_classes": {nc}}},
        "pretrained_cfg": {{"input_size": [3, {img}, {img}], "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225], "crop_pct": 0.875, "interpolation": "bicubic"}}}}"#,
        nc = cfg.num_classes,
        img = cfg.img_size,
        p = cfg.patch_size,
        d = cfg.embed_dim,
        depth = cfg.depth,
        h = cfg.num_heads
    )
}

fn hf_config_json(cfg: &VitConfig) -> String {
    let labels: Vec<String> = (0..cfg.num_classes)
        .map(|i| format!("\"{i}\": \"c{i}\""))
        .collect();
    format!(
        r#"{{"model_type": "vit", "hidden_size": {d}, "num_hidden_layers": {depth}, "num_attention_heads": {h},
        "intermediate_size": {m}, "image_size": {img}, "patch_size": {p}, "num_channels": 3,
        "layer_norm_eps": 1e-12, "qkv_bias": true, "id2label": {{{labels}}}}}"#,
        d = cfg.embed_dim,
        depth = cfg.depth,
        h = cfg.num_heads,
        m = cfg.mlp_hidden,
        img = cfg.img_size,
        p = cfg.patch_size,
        labels = labels.join(", ")
    )
}

/// The same weights in transformers naming (q, k, v split out of `qkv`).
fn to_transformers(t: &BTreeMap<String, Tensor>, cfg: &VitConfig) -> BTreeMap<String, Tensor> {
    let d = cfg.embed_dim;
    let mut out = BTreeMap::new();
    let mut put = |k: String, v: &Tensor| {
        out.insert(k, v.clone());
    };
    put("vit.embeddings.cls_token".into(), &t["cls_token"]);
    put("vit.embeddings.position_embeddings".into(), &t["pos_embed"]);
    for s in ["weight", "bias"] {
        put(
            format!("vit.embeddings.patch_embeddings.projection.{s}"),
            &t[&format!("patch_embed.proj.{s}")],
        );
        put(format!("vit.layernorm.{s}"), &t[&format!("norm.{s}")]);
        put(format!("classifier.{s}"), &t[&format!("head.{s}")]);
        for i in 0..cfg.depth {
            let l = |x: &str| format!("vit.encoder.layer.{i}.{x}.{s}");
            let b = |x: &str| t[&format!("blocks.{i}.{x}.{s}")].clone();
            put(l("layernorm_before"), &b("norm1"));
            put(l("layernorm_after"), &b("norm2"));
            put(l("attention.output.dense"), &b("attn.proj"));
            put(l("intermediate.dense"), &b("mlp.fc1"));
            put(l("output.dense"), &b("mlp.fc2"));
            let qkv = b("attn.qkv");
            for (j, n) in ["query", "key", "value"].iter().enumerate() {
                put(
                    l(&format!("attention.attention.{n}")),
                    &qkv.narrow(0, j * d, d).unwrap(),
                );
            }
        }
    }
    out
}

fn logits(vit: &Vit) -> Vec<f32> {
    let x = Tensor::arange(0f32, (2 * 3 * 32 * 32) as f32, &Device::Cpu)
        .unwrap()
        .reshape((2, 3, 32, 32))
        .unwrap()
        .affine(1.0 / 3000.0, -1.0)
        .unwrap();
    vit.forward(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Writes a fake hub cache entry exactly as the Python client lays it out.
fn fake_cache(hub: &Path, repo: &str, revision: &str, files: &[(&str, Vec<u8>)]) -> PathBuf {
    let folder = hub.join(format!("models--{}", repo.replace('/', "--")));
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let refs = folder.join("refs").join(revision);
    std::fs::create_dir_all(refs.parent().unwrap()).unwrap();
    std::fs::write(&refs, commit).unwrap();
    let snap = folder.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    for (name, bytes) in files {
        std::fs::write(snap.join(name), bytes).unwrap();
    }
    snap
}

fn offline(hub: &Path) -> HubOptions {
    HubOptions {
        cache_dir: hub.to_path_buf(),
        offline: true,
        progress: false,
    }
}

fn weights_bytes(t: &BTreeMap<String, Tensor>) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.safetensors");
    write_safetensors(t, &p).unwrap();
    std::fs::read(p).unwrap()
}

#[test]
fn timm_and_transformers_caches_load_the_same_model() {
    let cfg = tiny();
    let vit = Vit::random(&cfg, 11, &Device::Cpu).unwrap();
    let timm = vit.params().snapshot().unwrap();
    let hf = to_transformers(&timm, &cfg);
    let tmp = tempfile::tempdir().unwrap();
    let hub = tmp.path().join("hub");
    fake_cache(
        &hub,
        "org/tiny-timm",
        "main",
        &[
            ("model.safetensors", weights_bytes(&timm)),
            ("config.json", timm_config_json(&cfg).into_bytes()),
        ],
    );
    fake_cache(
        &hub,
        "org/tiny-hf",
        "refs/pr/2",
        &[
            ("model.safetensors", weights_bytes(&hf)),
            ("config.json", hf_config_json(&cfg).into_bytes()),
        ],
    );
    let a = model::load(None, Some("org/tiny-timm"), &offline(&hub), &Device::Cpu).unwrap();
    let b = model::load(
        None,
        Some("org/tiny-hf@refs/pr/2"),
        &offline(&hub),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(a.naming, model::Naming::Timm);
    assert_eq!(b.naming, model::Naming::Transformers);
    assert_eq!(a.pretrained.mean, [0.485, 0.456, 0.406]);
    assert_eq!(a.pretrained.crop_pct, 0.875);
    assert_eq!(logits(&a.vit), logits(&vit));
    let (la, lb) = (logits(&a.vit), logits(&b.vit));
    let d = model::compare("logits (timm vs transformers naming)", &la, &lb).unwrap();
    assert!(
        d.max_abs_diff < 1e-6,
        "timm vs transformers naming differ by {d:?}"
    );
}

#[test]
fn offline_miss_names_the_file_and_where_it_looked() {
    let tmp = tempfile::tempdir().unwrap();
    let e = model::load(
        Some("augreg-base"),
        None,
        &offline(tmp.path()),
        &Device::Cpu,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("model.safetensors"), "{e}");
    assert!(
        e.contains("timm/vit_base_patch16_224.augreg_in21k_ft_in1k@main"),
        "{e}"
    );
    assert!(
        e.contains("models--timm--vit_base_patch16_224.augreg_in21k_ft_in1k"),
        "{e}"
    );
    // The options say offline; the message blames HF_HUB_OFFLINE only when it is set.
    if model::HubOptions::from_env().offline {
        assert!(e.contains("HF_HUB_OFFLINE is set"), "{e}");
    } else {
        assert!(e.contains("this run only looks in the cache"), "{e}");
        assert!(!e.contains("HF_HUB_OFFLINE is set"), "{e}");
    }
    assert!(e.contains("evaluate --checkpoint"), "{e}");
}

#[test]
fn folder_and_file_sources_and_timm_save_roundtrip() {
    let cfg = tiny();
    let vit = Vit::random(&cfg, 5, &Device::Cpu).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    model::save_params(vit.params(), &dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("config.json"), timm_config_json(&cfg)).unwrap();
    let from_dir = model::load(
        None,
        Some(dir.to_str().unwrap()),
        &offline(tmp.path()),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(logits(&from_dir.vit), logits(&vit));
    // A single file with a foreign config.json beside it (a training run folder).
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::copy(dir.join("model.safetensors"), run.join("best.safetensors")).unwrap();
    std::fs::write(run.join("config.json"), r#"{"lr": 1e-6}"#).unwrap();
    let f = run.join("best.safetensors");
    let e = model::load(
        None,
        Some(f.to_str().unwrap()),
        &offline(tmp.path()),
        &Device::Cpu,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("no config.json") && e.contains("--model"), "{e}");
    // With the architecture in the header, the file loads on its own; saving is byte-stable.
    let meta = [
        ("a".to_string(), "1".to_string()),
        ("b".to_string(), "2".to_string()),
    ]
    .into();
    model::save_model(&vit, &f, &meta).unwrap();
    let first = std::fs::read(&f).unwrap();
    for _ in 0..3 {
        model::save_model(&vit, &f, &meta).unwrap();
        assert_eq!(
            std::fs::read(&f).unwrap(),
            first,
            "saving is not deterministic"
        );
    }
    let alone = model::load(
        None,
        Some(f.to_str().unwrap()),
        &offline(tmp.path()),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(alone.vit.config(), &cfg);
    assert_eq!(logits(&alone.vit), logits(&vit));
    // The saved names are exactly timm's, with the pytorch format tag timm's loader expects.
    let bytes = std::fs::read(&f).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt");
    let names: Vec<String> = read_safetensors(&f, &Device::Cpu)
        .unwrap()
        .into_keys()
        .collect();
    let want: Vec<String> = {
        let mut v: Vec<String> = model::expected_shapes(&cfg)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        v.sort();
        v
    };
    assert_eq!(names, want);
}

fn load_dir_err(tensors: &BTreeMap<String, Tensor>, cfg: &VitConfig) -> ModelError {
    let tmp = tempfile::tempdir().unwrap();
    write_safetensors(tensors, &tmp.path().join("model.safetensors")).unwrap();
    std::fs::write(tmp.path().join("config.json"), timm_config_json(cfg)).unwrap();
    model::load(
        None,
        Some(tmp.path().to_str().unwrap()),
        &offline(tmp.path()),
        &Device::Cpu,
    )
    .err()
    .unwrap()
}

#[test]
fn strict_loading_names_the_bad_tensor() {
    let cfg = tiny();
    let good = Vit::random(&cfg, 1, &Device::Cpu)
        .unwrap()
        .params()
        .snapshot()
        .unwrap();

    let mut missing = good.clone();
    missing.remove("blocks.1.mlp.fc2.bias");
    let e = load_dir_err(&missing, &cfg);
    assert!(
        matches!(e, ModelError::MissingTensor { ref name, .. } if name == "blocks.1.mlp.fc2.bias"),
        "{e}"
    );

    let mut extra = good.clone();
    extra.insert(
        "dist_token".into(),
        Tensor::zeros((1, 1, 32), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let e = load_dir_err(&extra, &cfg);
    assert!(e.to_string().contains("dist_token"), "{e}");

    let mut wrong = good.clone();
    wrong.insert(
        "head.weight".into(),
        Tensor::zeros((7, 32), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let e = load_dir_err(&wrong, &cfg);
    let s = e.to_string();
    assert!(
        s.contains("head.weight") && s.contains("[7, 32]") && s.contains("[10, 32]"),
        "{s}"
    );
}

#[test]
fn truncated_and_pickle_files_are_refused_with_advice() {
    let cfg = tiny();
    let good = Vit::random(&cfg, 1, &Device::Cpu)
        .unwrap()
        .params()
        .snapshot()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("model.safetensors");
    let bytes = weights_bytes(&good);
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = read_safetensors(&p, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(p.to_str().unwrap()) && e.contains("truncated"),
        "{e}"
    );

    let pth = tmp.path().join("model.pth");
    std::fs::write(&pth, b"\x80\x02not really").unwrap();
    let e = read_safetensors(&pth, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("only .safetensors"), "{e}");

    let e = model::WeightsSource::parse("no/such/path.safetensors")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("neither an existing file"), "{e}");
    let e = model::load(Some("resnet50"), None, &offline(tmp.path()), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("unknown model"), "{e}");
}

#[test]
fn wrong_input_shape_is_an_error() {
    let vit = Vit::random(&tiny(), 1, &Device::Cpu).unwrap();
    let x = Tensor::zeros((1, 3, 48, 48), candle_core::DType::F32, &Device::Cpu).unwrap();
    let e = vit.forward(&x).err().unwrap().to_string();
    assert!(
        e.contains("[1, 3, 48, 48]") && e.contains("(B, 3, 32, 32)"),
        "{e}"
    );
}

/// A finetuned checkpoint keeps its model's preprocessing: the file saved with the recorded
/// preprocessing in its header loads exactly like the hub-like folder it came from, and a bare
/// DeiT file with nothing recorded falls back to DeiT's own crop 0.9 (Resize 248), not 0.875.
#[test]
fn recorded_preprocessing_travels_with_a_bare_checkpoint() {
    let cfg = tiny();
    let vit = Vit::random(&cfg, 9, &Device::Cpu).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let opts = offline(tmp.path());
    let hub_like = tmp.path().join("hub");
    model::save_params(vit.params(), &hub_like.join("model.safetensors")).unwrap();
    std::fs::write(hub_like.join("config.json"), timm_config_json(&cfg)).unwrap();
    let dir_spec = hub_like.to_str().unwrap();
    let from_dir = model::load(None, Some(dir_spec), &opts, &Device::Cpu).unwrap();
    assert_eq!(from_dir.pretrained.crop_pct, 0.875);
    // What a training run records, read without loading the weights.
    let recorded = model::hub::pretrained_cfg(None, Some(dir_spec), &opts).unwrap();
    assert_eq!(recorded, from_dir.pretrained);

    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let best = run.join("best.safetensors");
    let meta = [(
        model::weights::PRETRAINED_METADATA_KEY.to_string(),
        serde_json::to_string(&recorded).unwrap(),
    )]
    .into();
    model::save_model(&from_dir.vit, &best, &meta).unwrap();
    // Even when named as a DeiT, the recorded preprocessing wins over the variant's default.
    for name in [None, Some("deit-small")] {
        let bare = model::load(name, Some(best.to_str().unwrap()), &opts, &Device::Cpu).unwrap();
        assert_eq!(bare.pretrained, from_dir.pretrained, "{name:?}");
        assert_eq!(logits(&bare.vit), logits(&from_dir.vit), "{name:?}");
        assert_eq!(
            model::hub::pretrained_cfg(name, Some(best.to_str().unwrap()), &opts).unwrap(),
            recorded
        );
    }

    // Nothing recorded: the named variant's own preprocessing.
    let plain = run.join("plain.safetensors");
    model::save_model(&vit, &plain, &BTreeMap::new()).unwrap();
    let deit = model::load(
        Some("deit-small"),
        Some(plain.to_str().unwrap()),
        &opts,
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(deit.pretrained.crop_pct, 0.9);
    assert_eq!(deit.pretrained.mean, [0.485, 0.456, 0.406]);
    assert_eq!(deit.pretrained.interpolation, "bicubic");
    // A corrupt record is named, not ignored.
    let bad = run.join("bad.safetensors");
    let meta = [(
        model::weights::PRETRAINED_METADATA_KEY.to_string(),
        "{".to_string(),
    )]
    .into();
    model::save_model(&vit, &bad, &meta).unwrap();
    let e = model::load(None, Some(bad.to_str().unwrap()), &opts, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("bad.safetensors") && e.contains("preprocessing"),
        "{e}"
    );
}
