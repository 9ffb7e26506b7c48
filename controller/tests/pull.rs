//! Issue 15 (5): verification where models are loaded. `provenant verify --pull DIR` writes a
//! model's files only when it verifies (signature, policies, every file against the attested
//! manifest), and never outside DIR nor over anything; and the init container of the serving
//! samples (config/samples/serving/), its command taken from the sample, pulls an attested
//! model from the registry fixture and refuses an unattested or tampered one, leaving the shared
//! directory empty. (The Deployment sample against a real kube-apiserver:
//! test/scenarios/serving_samples.rs.)

#[path = "support/attested.rs"]
mod attested;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use attested::{Keys, attest_cluster_run, provenant, push_model, repo_root, text};
use provenant_testbed::registry::{ModelRef, Registry};
use serde_json::Value;

const LICENSED: [(&str, &str); 2] = [("imagenet-subset", "CC-BY-4.0"), ("augment-cache", "MIT")];
const IMAGE: &str = "registry.example.com/approved/train-resnet";

const FILES: [(&str, &[u8]); 3] = [
    ("config.json", b"{\"layers\": 50}"),
    ("model.safetensors", b"\x00\x01weights\x02"),
    ("tokenizer/vocab.txt", b"cat\ndog\n"),
];

/// Every file under `dir`, relative path → content.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let name = path.strip_prefix(root).unwrap().display().to_string();
                out.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn expected_files() -> BTreeMap<String, Vec<u8>> {
    FILES
        .iter()
        .map(|(name, bytes)| (name.to_string(), bytes.to_vec()))
        .collect()
}

/// The blob file of `digest` in the registry fixture's storage.
fn stored_blob(registry: &Registry, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    registry
        .storage_dir()
        .unwrap()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

fn pull(registry: &Registry, model: &ModelRef, key: &str, dir: &Path, extra: &[&str]) -> Output {
    let dir = dir.display().to_string();
    let mut args = vec![
        "verify",
        model.reference.as_str(),
        "--key",
        key,
        "--insecure-registry",
        registry.host(),
        "--pull",
        dir.as_str(),
    ];
    args.extend_from_slice(extra);
    provenant(&args)
}

#[tokio::test]
async fn pull_writes_the_files_only_when_the_model_verifies() {
    let registry = Registry::start().await.unwrap();
    let keys = Keys::new();
    let key = keys.public();
    let work = tempfile::tempdir().unwrap();

    // Attested: verified, then every file written, nothing else left in the directory.
    let model = push_model(&registry, "served", &FILES).await;
    attest_cluster_run(&registry, &model, IMAGE, &LICENSED, &keys.key).await;
    let dir = work.path().join("attested");
    let out = pull(&registry, &model, &key, &dir, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("pulled 3 files"), "{}", text(&out));
    assert_eq!(tree(&dir), expected_files());
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        3,
        "config.json, model.safetensors, tokenizer/"
    );

    // Again into the same directory (an init container run again over its volume): the files
    // are re-checked, nothing is written.
    let out = pull(&registry, &model, &key, &dir, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("already holds this model: 3 files"),
        "{}",
        text(&out)
    );
    // A file of it changed, or another file beside it: refused (exit 2), nothing overwritten.
    std::fs::write(dir.join("config.json"), b"mine").unwrap();
    let out = pull(&registry, &model, &key, &dir, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("not empty, and not exactly this model (config.json is not one of its files as attested)"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(dir.join("config.json")).unwrap(), b"mine");

    // Refused by a policy: verified signature, but nothing written.
    let dir = work.path().join("refused-by-policy");
    let data = work.path().join("registries.json");
    std::fs::write(&data, r#"{"allowed_image_registries": ["ghcr.io"]}"#).unwrap();
    let images = attested::policy("base-image-registry.rego");
    let out = pull(
        &registry,
        &model,
        &key,
        &dir,
        &["--policy", &images, "--policy-data", data.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(tree(&dir).is_empty(), "{:?}", tree(&dir).keys());

    // Another key: not verified, nothing written.
    let other = Keys::new();
    let dir = work.path().join("other-key");
    let out = pull(&registry, &model, &other.public(), &dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(tree(&dir).is_empty());

    // Not attested at all.
    let bare = push_model(&registry, "bare", &FILES[..1]).await;
    let dir = work.path().join("unattested");
    let out = pull(&registry, &bare, &key, &dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("no attestation found"),
        "{}",
        text(&out)
    );
    assert!(tree(&dir).is_empty());
}

/// A registry (or anyone with write access to its storage) that serves other bytes than the
/// attested manifest names: the file is refused as it is written, and nothing is left behind.
#[tokio::test]
async fn a_file_changed_in_the_registry_is_refused_and_nothing_lands() {
    let registry = Registry::start().await.unwrap();
    let keys = Keys::new();
    let model = push_model(&registry, "tampered", &FILES).await;
    attest_cluster_run(&registry, &model, IMAGE, &LICENSED, &keys.key).await;
    let weights = model
        .layers
        .iter()
        .find(|l| l.annotations.values().any(|t| t == "model.safetensors"))
        .unwrap()
        .digest
        .clone();
    let blob = stored_blob(&registry, &weights);
    let mut bytes = std::fs::read(&blob).unwrap();
    assert_eq!(bytes, FILES[1].1, "the fixture's storage layout");
    bytes[3] ^= 0x20; // same size, one bit changed
    std::fs::write(&blob, &bytes).unwrap();

    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("models");
    let out = pull(&registry, &model, &keys.public(), &dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains(&format!(
            "model file model.safetensors was served as {}",
            provenant::observe::sha256_digest(&bytes)
        )) && said.contains(&format!("the attested manifest says {weights}")),
        "{said}"
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "{:?}",
        tree(&dir).keys()
    );
}

/// The manifest is the workload's (it pushes the model): a title that would leave DIR is refused
/// even though the controller signed the model's digest, and nothing is written anywhere.
#[tokio::test]
async fn a_title_that_leaves_the_directory_is_refused() {
    let registry = Registry::start().await.unwrap();
    let keys = Keys::new();
    let model = push_model(
        &registry,
        "escape",
        &[("model.bin", b"ok"), ("../escaped.txt", b"pwned")],
    )
    .await;
    attest_cluster_run(&registry, &model, IMAGE, &LICENSED, &keys.key).await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("models");
    let out = pull(&registry, &model, &keys.public(), &dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("\"../escaped.txt\""), "{}", text(&out));
    assert!(!work.path().join("escaped.txt").exists());
    assert!(tree(&dir).is_empty());
}

/// A pod's init container as the sample writes it.
struct InitContainer {
    command: Vec<String>,
    env: BTreeMap<String, String>,
    /// mount path → volume name
    mounts: BTreeMap<String, String>,
}

fn sample(name: &str) -> Value {
    let path = repo_root().join("config/samples/serving").join(name);
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn init_container(pod: &Value) -> InitContainer {
    let init = &pod["initContainers"][0];
    assert_eq!(init["name"], "verify-model");
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let mut command = strings(&init["command"]);
    command.extend(strings(&init["args"]));
    InitContainer {
        command,
        env: init["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let name = e["name"].as_str().unwrap().to_string();
                (name, e["value"].as_str().unwrap().to_string())
            })
            .collect(),
        mounts: init["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let path = m["mountPath"].as_str().unwrap().to_string();
                (path, m["name"].as_str().unwrap().to_string())
            })
            .collect(),
    }
}

/// What both samples promise: the init container pulls into an emptyDir, which the serving
/// container mounts read-only; its model is a digest, never a tag.
fn check_recipe(pod: &Value) -> InitContainer {
    let init = init_container(pod);
    let pull = init.command.iter().position(|a| a == "--pull").unwrap();
    let target = &init.command[pull + 1];
    let volume = &init.mounts[target];
    let volumes = pod["volumes"].as_array().unwrap();
    let shared = volumes.iter().find(|v| v["name"] == *volume).unwrap();
    assert!(shared.get("emptyDir").is_some(), "{shared}");
    let server = &pod["containers"][0];
    let mount = server["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == *volume)
        .expect("the serving container mounts the verified model");
    assert_eq!(mount["readOnly"], true, "{mount}");
    assert_eq!(init.command[..3], ["provenant", "verify", "$(MODEL)"]);
    let model = &init.env["MODEL"];
    assert!(model.contains("@sha256:") && model.len() > 71, "{model}");
    assert!(init.command.contains(&"--key".to_string()));
    init
}

#[test]
fn the_kserve_sample_uses_the_same_init_container_and_no_storage_initializer() {
    let deployment = sample("deployment.yaml");
    let isvc = sample("inferenceservice.yaml");
    assert_eq!(isvc["apiVersion"], "serving.kserve.io/v1beta1");
    assert_eq!(isvc["kind"], "InferenceService");
    let predictor = &isvc["spec"]["predictor"];
    // storageUri (anywhere in the predictor) would make KServe add its own downloader.
    assert!(
        !serde_json::to_string(predictor)
            .unwrap()
            .contains("storageUri")
    );
    let pod = &deployment["spec"]["template"]["spec"];
    check_recipe(predictor);
    check_recipe(pod);
    assert_eq!(
        predictor["initContainers"], pod["initContainers"],
        "the two samples' init containers differ"
    );
}

/// The init container of the Deployment sample, run here as the kubelet would run it: `$(VAR)`
/// expanded from its env (MODEL set to a model of the registry fixture, as a user edits it),
/// each mount a directory (the key and the policy as their ConfigMaps would hold them), and
/// `--insecure-registry` added because the fixture is plain HTTP.
#[tokio::test]
async fn the_sample_init_container_pulls_an_attested_model_and_refuses_the_others() {
    let registry = Registry::start().await.unwrap();
    let keys = Keys::new();
    let init = check_recipe(&sample("deployment.yaml")["spec"]["template"]["spec"]);

    let run = |model: &ModelRef| -> (Output, BTreeMap<String, Vec<u8>>) {
        let pod = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = Vec::new();
        let mut env = init.env.clone();
        env.insert("MODEL".into(), model.reference.clone());
        let mut mounts = BTreeMap::new();
        for (path, volume) in &init.mounts {
            let dir = pod.path().join(volume);
            std::fs::create_dir_all(&dir).unwrap();
            match volume.as_str() {
                "provenance-key" => {
                    std::fs::copy(keys.public(), dir.join("cosign.pub")).unwrap();
                }
                "policies" => {
                    let from = repo_root().join("config/policies/dataset-license.rego");
                    std::fs::copy(from, dir.join("dataset-license.rego")).unwrap();
                }
                _ => {}
            }
            mounts.insert(path.clone(), dir);
        }
        for arg in &init.command[1..] {
            let mut arg = arg.clone();
            for (name, value) in &env {
                arg = arg.replace(&format!("$({name})"), value);
            }
            for (path, dir) in &mounts {
                if arg == *path || arg.starts_with(&format!("{path}/")) {
                    arg = format!("{}{}", dir.display(), &arg[path.len()..]);
                }
            }
            args.push(arg);
        }
        args.extend(["--insecure-registry".into(), registry.host().to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = provenant(&args);
        let shared = tree(&mounts["/models"]);
        (out, shared)
    };

    let attested = push_model(&registry, "resnet50", &FILES).await;
    attest_cluster_run(&registry, &attested, IMAGE, &LICENSED, &keys.key).await;
    let (out, files) = run(&attested);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(files, expected_files());

    let unattested = push_model(&registry, "unattested", &FILES[..2]).await;
    let (out, files) = run(&unattested);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(files.is_empty(), "{:?}", files.keys());

    // Attested, then one file changed in the registry's storage.
    let tampered = push_model(&registry, "tampered", &[("weights.bin", b"tampered-1")]).await;
    attest_cluster_run(&registry, &tampered, IMAGE, &LICENSED, &keys.key).await;
    std::fs::write(
        stored_blob(&registry, &tampered.layers[0].digest),
        b"tampered-2",
    )
    .unwrap();
    let (out, files) = run(&tampered);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("was served as"), "{}", text(&out));
    assert!(files.is_empty(), "{:?}", files.keys());

    // Attested, but a dataset declares no license: the sample's policy refuses it.
    let unlicensed = push_model(&registry, "unlicensed", &FILES[..1]).await;
    attest_cluster_run(&registry, &unlicensed, IMAGE, &LICENSED[..1], &keys.key).await;
    let (out, files) = run(&unlicensed);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("dataset \"augment-cache\" has no declared license"),
        "{}",
        text(&out)
    );
    assert!(files.is_empty(), "{:?}", files.keys());
}

/// From an OCI image layout (a copy of a real attested one, `tests/fixtures/legacy-0.1.0/attest`):
/// the files land; a layout whose model file was changed in place lands nothing.
#[test]
fn pull_from_a_layout() {
    let fixture = repo_root().join("controller/tests/fixtures/legacy-0.1.0/attest");
    let digest = std::fs::read_to_string(fixture.join("model-digest")).unwrap();
    let digest = digest.trim();
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("layout");
    let out = std::process::Command::new("cp")
        .args(["-r"])
        .arg(fixture.join("layout"))
        .arg(&copy)
        .output()
        .unwrap();
    assert!(out.status.success());
    let key = fixture.join("cosign.pub").display().to_string();
    let reference = format!("oci:{}@{digest}", copy.display());
    let run = |dir: &Path| {
        let dir = dir.display().to_string();
        provenant(&["verify", &reference, "--key", &key, "--pull", &dir, "-q"])
    };

    let dir = work.path().join("models");
    let out = run(&dir);
    assert!(out.status.success(), "{}", text(&out));
    let files = tree(&dir);
    assert_eq!(files.keys().collect::<Vec<_>>(), ["model.bin"]);
    let hex = |bytes: &[u8]| provenant::observe::sha256_digest(bytes);
    let blob = copy
        .join("blobs/sha256")
        .join(hex(&files["model.bin"]).trim_start_matches("sha256:"));
    assert_eq!(std::fs::read(&blob).unwrap(), files["model.bin"]);

    let mut bytes = files["model.bin"].clone();
    bytes[0] ^= 1;
    std::fs::write(&blob, &bytes).unwrap();
    let dir = work.path().join("after-tampering");
    let out = run(&dir);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("was modified in the layout"),
        "{}",
        text(&out)
    );
    assert!(tree(&dir).is_empty());
}
