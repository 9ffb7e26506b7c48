//! `provenant revoke` (the real binary) over the chain of `support/lineage_chain.rs` in a real
//! registry: the revocations it attaches verify with the real cosign (`verify-attestation --type
//! https://provenant.dev/revocation/v1`, and not with another key), `provenant lineage` shows
//! them on the affected models only, and a material nothing depends on is "nothing to revoke".

#[path = "support/attest_cmd.rs"]
mod attest_cmd;
#[path = "support/lineage_chain.rs"]
mod chain;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chain::{DATASET_D, DATASET_E, Keys, ask, in_registry, path, provenant, stdout_json, text};
use provenant::signing::CosignKey;
use provenant_testbed::registry::Registry;
use provenant_testbed::tools;
use serde_json::Value;

/// `cosign verify-attestation --type https://provenant.dev/revocation/v1` on `reference`.
fn cosign_verify_revocation(
    reference: &str,
    public: &str,
    home: &std::path::Path,
) -> Result<Value, String> {
    let out = std::process::Command::new(tools::path("cosign").unwrap())
        .args([
            "verify-attestation",
            "--key",
            public,
            "--insecure-ignore-tlog=true",
            "--type",
            "https://provenant.dev/revocation/v1",
            reference,
        ])
        .env("HOME", home)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(text(&out));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let envelope: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    let payload = STANDARD
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    Ok(serde_json::from_slice(&payload).unwrap())
}

#[tokio::test]
async fn revoke_attaches_revocations_that_cosign_verifies_and_lineage_shows() {
    let registry = Registry::from_env_or_start().await.unwrap();
    let keys = Keys::generate();
    let [_, _, ftft, other] = in_registry(&registry, &keys.key).await;
    let host = registry.host().to_string();
    let (private, public) = (keys.private(), keys.public());
    let out = provenant(&[
        "revoke",
        "--dataset",
        DATASET_D,
        "--reason",
        "poisoned samples",
        "--advisory",
        "https://example.com/adv/7",
        "--name",
        "drill",
        "--key",
        &private,
        "--registry",
        &host,
        "--insecure-registry",
        &host,
        "--output",
        "json",
    ]);
    let report = stdout_json(&out);
    assert_eq!(report["revocation"]["name"], "drill");
    let models = report["models"].as_array().unwrap();
    assert_eq!(models.len(), 3, "{report}");
    for m in models {
        assert!(
            m["attached"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r.as_str().unwrap().ends_with(".att")),
            "{m}"
        );
    }

    let home = tempfile::tempdir().unwrap();
    let statement = cosign_verify_revocation(&ftft.reference(), &public, home.path()).unwrap();
    assert_eq!(
        statement["predicateType"],
        "https://provenant.dev/revocation/v1"
    );
    assert_eq!(
        statement["subject"][0]["digest"]["sha256"],
        ftft.digest.trim_start_matches("sha256:")
    );
    let p = &statement["predicate"];
    assert_eq!(p["state"], "revoked");
    assert_eq!(p["revocation"]["reason"], "poisoned samples");
    assert_eq!(
        p["material"],
        serde_json::json!({"type": "dataset", "digest": DATASET_D})
    );
    assert_eq!(p["issuer"], "https://provenant.dev/revoke/v1");
    assert_eq!(p["path"].as_array().unwrap().len(), 3);
    // Another key does not verify it; the unrelated model has no revocation.
    let stranger = tempfile::tempdir().unwrap();
    let stranger_pub = stranger.path().join("other.pub");
    std::fs::write(
        &stranger_pub,
        CosignKey::ephemeral().unwrap().public_key().pem(),
    )
    .unwrap();
    assert!(
        cosign_verify_revocation(&ftft.reference(), &path(&stranger_pub), home.path()).is_err()
    );
    assert!(cosign_verify_revocation(&other.reference(), &public, home.path()).is_err());

    let answer = ask(
        &["--registry", &host, "--insecure-registry", &host],
        &keys,
        &["--dataset", DATASET_E],
    );
    let revoked: Vec<(String, usize)> = answer["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let name = m["model"]["repository"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap();
            (name.to_string(), m["revoked"].as_array().unwrap().len())
        })
        .collect();
    assert_eq!(
        revoked,
        [("ft".into(), 1), ("ftft".into(), 1), ("other".into(), 0)]
    );
    let out = provenant(&[
        "lineage",
        "--registry",
        &host,
        "--insecure-registry",
        &host,
        "--key",
        &public,
        "--dataset",
        DATASET_D,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("REVOKED") && stdout.contains("revoked by drill: poisoned samples"),
        "{stdout}"
    );

    // Nothing depends on it: said, not an error.
    let out = provenant(&[
        "revoke",
        "--image",
        &format!("sha256:{}", "0".repeat(64)),
        "--reason",
        "cve",
        "--key",
        &private,
        "--registry",
        &host,
        "--insecure-registry",
        &host,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to revoke"));
}
