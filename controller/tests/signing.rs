//! Signing seen from outside: DSSE envelopes verified by Python's securesystemslib (an
//! independent implementation), which must also refuse a tampered one, and `provenant keys
//! generate` as a user runs it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use provenant::api::TrainingRun;
use provenant::config::ControllerConfig;
use provenant::execute::placement;
use provenant::provenance::{self, BuilderIdentity};
use provenant::signing::{
    CosignKey, Envelope, IN_TOTO_PAYLOAD_TYPE, PublicKey, Signer, generate, load_from_secret_data,
    sign_envelope,
};

const INSTALL_HINT: &str = "pip install -r test/python/requirements.txt";

const STATEMENT: &str = r#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"registry.example.com/models/resnet","digest":{"sha256":"f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b"}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{"buildDefinition":{"buildType":"https://provenant.dev/TrainingRun/v1"}}}"#;

/// Run `test/python/verify_dsse.py`; a missing interpreter or package fails the test with the
/// install command (CI installs them: this never skips).
fn python_verify(envelope: &Path, public_key: &Path) -> Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../test/python/verify_dsse.py");
    let output = match Command::new("python3")
        .arg(script)
        .arg(envelope)
        .arg(public_key)
        .output()
    {
        Ok(output) => output,
        Err(e) => panic!("cannot run python3 ({e}): install Python 3, then {INSTALL_HINT}"),
    };
    assert_ne!(
        output.status.code(),
        Some(3),
        "securesystemslib is missing: {INSTALL_HINT}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn securesystemslib_verifies_our_envelope_and_rejects_tampering() {
    let password = b"interop";
    let keys = generate(password).expect("generate");
    let key =
        CosignKey::from_pem("cosign.key", keys.private_pem.as_bytes(), password).expect("load");
    let envelope = sign_envelope(&key, IN_TOTO_PAYLOAD_TYPE, STATEMENT.as_bytes()).expect("sign");

    let dir = tempfile::tempdir().expect("tempdir");
    let public_path = dir.path().join("cosign.pub");
    std::fs::write(&public_path, &keys.public_pem).expect("write pub");

    let good = dir.path().join("envelope.json");
    std::fs::write(&good, envelope.to_json().expect("serialize")).expect("write envelope");
    let output = python_verify(&good, &public_path);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(key.key_id()),
        "{}",
        describe(&output)
    );

    // One payload byte changed, signature kept.
    let mut tampered = envelope.clone();
    tampered.payload = STANDARD.encode(STATEMENT.replace("resnet", "resnes"));
    let bad = dir.path().join("tampered.json");
    std::fs::write(&bad, tampered.to_json().expect("serialize")).expect("write tampered");
    let output = python_verify(&bad, &public_path);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("does not verify"),
        "{}",
        describe(&output)
    );

    // Another key: the envelope has no signature by it.
    let other = CosignKey::ephemeral().expect("other key");
    let other_path = dir.path().join("other.pub");
    std::fs::write(&other_path, other.public_key_pem()).expect("write other pub");
    let output = python_verify(&good, &other_path);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("no signature by key"),
        "{}",
        describe(&output)
    );
}

#[test]
fn securesystemslib_verifies_an_envelope_without_keyid() {
    let key = CosignKey::ephemeral().expect("key");
    let mut envelope =
        sign_envelope(&key, IN_TOTO_PAYLOAD_TYPE, STATEMENT.as_bytes()).expect("sign");
    envelope.signatures[0].keyid.clear();
    let dir = tempfile::tempdir().expect("tempdir");
    let envelope_path = dir.path().join("envelope.json");
    let public_path = dir.path().join("cosign.pub");
    std::fs::write(&envelope_path, envelope.to_json().expect("serialize")).expect("write envelope");
    std::fs::write(&public_path, key.public_key_pem()).expect("write pub");
    let output = python_verify(&envelope_path, &public_path);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
}

/// An envelope as the controller signs one (`engine::sign` of the fixture's statement).
fn controller_envelope(key: &CosignKey) -> Vec<u8> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/succeeded-run.yaml"
    ))
    .expect("fixture");
    let run: TrainingRun = serde_saphyr::from_str(&text).expect("fixture");
    let placement =
        placement(&ControllerConfig::defaults(), run.spec.accelerator.as_ref()).expect("placement");
    let builder = BuilderIdentity::controller(provenance::DEFAULT_BUILDER_ID, None);
    let statement = provenance::statement_for_run(&run, &placement, &builder).expect("statement");
    provenant::engine::sign(&statement, key)
        .expect("sign")
        .envelope
}

#[test]
fn securesystemslib_refuses_a_controller_envelope_with_one_payload_bit_flipped() {
    let key = CosignKey::ephemeral().expect("key");
    let signed = controller_envelope(&key);
    let dir = tempfile::tempdir().expect("tempdir");
    let public_path = dir.path().join("cosign.pub");
    std::fs::write(&public_path, key.public_key_pem()).expect("write pub");

    // The envelope as signed verifies: what fails below fails for the flipped bit.
    let good = dir.path().join("envelope.json");
    std::fs::write(&good, &signed).expect("write envelope");
    let output = python_verify(&good, &public_path);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));

    let mut envelope = Envelope::from_json(&signed).expect("parse");
    let mut payload = envelope.payload_bytes().expect("payload");
    let middle = payload.len() / 2;
    payload[middle] ^= 0x01;
    envelope.payload = STANDARD.encode(&payload);
    let bad = dir.path().join("flipped.json");
    std::fs::write(&bad, envelope.to_json().expect("serialize")).expect("write flipped");
    let output = python_verify(&bad, &public_path);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("does not verify"),
        "{}",
        describe(&output)
    );
}

#[test]
fn envelope_json_round_trips_and_verifies_in_rust() {
    let key = CosignKey::ephemeral().expect("key");
    let envelope = sign_envelope(&key, IN_TOTO_PAYLOAD_TYPE, STATEMENT.as_bytes()).expect("sign");
    let parsed = Envelope::from_json(&envelope.to_json().expect("serialize")).expect("parse");
    let public = PublicKey::from_pem(key.public_key_pem()).expect("public key");
    let payload = provenant::signing::verify_envelope(&parsed, &public).expect("verify");
    assert_eq!(payload, STATEMENT.as_bytes());
}

// ---- provenant keys generate ----

fn keys_generate(args: &[&str], password: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_provenant"));
    command.arg("keys").arg("generate").args(args);
    match password {
        Some(password) => command.env("COSIGN_PASSWORD", password),
        None => command.env_remove("COSIGN_PASSWORD"),
    };
    command.output().expect("run provenant")
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// The `key id: <hex>` line on stderr.
fn printed_key_id(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr
        .lines()
        .find_map(|line| line.strip_prefix("key id: "))
        .unwrap_or_else(|| panic!("no key id on stderr: {stderr}"))
        .to_string()
}

#[test]
fn keys_generate_writes_private_files_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("keys");
    let out_dir_arg = out_dir.to_str().expect("utf-8 path");

    // No COSIGN_PASSWORD: a random password, written next to the key.
    let output = keys_generate(&["--output-dir", out_dir_arg], None);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let key_path = out_dir.join("cosign.key");
    let pub_path = out_dir.join("cosign.pub");
    let password_path = out_dir.join("cosign.password");
    #[cfg(unix)]
    {
        assert_eq!(mode(&key_path), 0o600);
        assert_eq!(mode(&password_path), 0o600);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cosign.password"), "{stderr}");
    assert!(output.stdout.is_empty(), "{}", describe(&output));

    let private_pem = std::fs::read(&key_path).expect("read key");
    let public_pem = std::fs::read_to_string(&pub_path).expect("read pub");
    let password = std::fs::read(&password_path).expect("read password");
    assert_eq!(password.len(), 43);
    assert!(private_pem.starts_with(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
    let key = CosignKey::from_pem("cosign.key", &private_pem, &password).expect("load");
    assert_eq!(key.public_key_pem(), public_pem);
    assert_eq!(printed_key_id(&output), key.key_id());

    // Again without --force: refused with exit 2, files untouched.
    let output = keys_generate(&["--output-dir", out_dir_arg], Some("pw"));
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refusing to overwrite"), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read(&key_path).expect("read key"), private_pem);

    // With --force and a password from the environment: a new pair, still 0600.
    let output = keys_generate(&["--output-dir", out_dir_arg, "--force"], Some("pw"));
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let new_private = std::fs::read(&key_path).expect("read key");
    assert_ne!(new_private, private_pem);
    #[cfg(unix)]
    assert_eq!(mode(&key_path), 0o600);
    let key = CosignKey::from_pem("cosign.key", &new_private, b"pw").expect("load new");
    assert_eq!(printed_key_id(&output), key.key_id());
}

#[test]
fn keys_generate_prints_a_secret_the_controller_loads() {
    let output = keys_generate(
        &[
            "--secret",
            "provenant-signing",
            "--namespace",
            "provenant-system",
        ],
        Some("s3cret"),
    );
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let yaml = String::from_utf8(output.stdout.clone()).expect("utf-8");
    let manifest: serde_json::Value = serde_saphyr::from_str(&yaml).expect("YAML");
    assert_eq!(manifest["apiVersion"], "v1");
    assert_eq!(manifest["kind"], "Secret");
    assert_eq!(manifest["type"], "Opaque");
    assert_eq!(manifest["metadata"]["name"], "provenant-signing");
    assert_eq!(manifest["metadata"]["namespace"], "provenant-system");
    let data = manifest["data"].as_object().expect("data");
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(keys, ["cosign.key", "cosign.password", "cosign.pub"]);

    let decoded: BTreeMap<String, Vec<u8>> = data
        .iter()
        .map(|(k, v)| {
            let text = v.as_str().expect("string value");
            (k.clone(), STANDARD.decode(text).expect("base64"))
        })
        .collect();
    assert_eq!(decoded["cosign.password"], b"s3cret");
    let key = load_from_secret_data(&decoded).expect("controller loads the Secret");
    assert_eq!(printed_key_id(&output), key.key_id());
}

#[test]
fn keys_generate_secret_gets_a_random_password_when_unset() {
    let output = keys_generate(&["--secret", "signing"], None);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let manifest: serde_json::Value =
        serde_saphyr::from_str(&String::from_utf8_lossy(&output.stdout)).expect("YAML");
    assert!(manifest["metadata"].get("namespace").is_none());
    let password = STANDARD
        .decode(
            manifest["data"]["cosign.password"]
                .as_str()
                .expect("password"),
        )
        .expect("base64");
    assert_eq!(password.len(), 43);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("random"), "{stderr}");
    // The password is only in the Secret, never on stderr.
    assert!(
        !stderr.contains(&String::from_utf8_lossy(&password).to_string()),
        "{stderr}"
    );
}

#[test]
fn keys_generate_usage_errors_exit_2() {
    for args in [
        &[][..],
        &["--secret", "a", "--output-dir", "/tmp/x"][..],
        &["--secret", "Not_A_Name"][..],
        &["--secret", "a", "--force"][..],
        &["--output-dir", "/tmp/x", "--namespace", "ns"][..],
    ] {
        let output = keys_generate(args, Some("pw"));
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            describe(&output)
        );
    }
}
