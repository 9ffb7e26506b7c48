use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use super::*;

/// What `model_signing sign key --private_key key.pem --signature m2/model.sig m2` (model-signing
/// 1.1.1) wrote for a directory `m2` holding [`FIXTURE_FILES`] plus `.gitignore`, `.gitattributes`,
/// `.git/config`, `.github/x/w.yml` and an old `model.sig`, which it left out.
const REAL_SIGNATURE: &str = include_str!("../../../tests/fixtures/model-signing/files-1.1.1.sig");

/// The files of that directory, contents as written.
const FIXTURE_FILES: [(&str, &str); 12] = [
    ("a/b/c", "x"),
    ("a.b/c", "y"),
    ("a-b", "z"),
    ("B", "B"),
    ("é.bin", "e"),
    (".hidden", "h"),
    ("sp ace", "n"),
    ("sub/ligne", "l"),
    (".gitignore", "g"),
    (".git/config", "gc"),
    (".github/x/w.yml", "w"),
    (".gitattributes", "ga"),
];

fn fixture() -> Vec<ModelFileDigest> {
    let mut files: Vec<ModelFileDigest> = FIXTURE_FILES
        .iter()
        .map(|(path, content)| ModelFileDigest {
            path: path.to_string(),
            digest: crate::observe::sha256_digest(content.as_bytes()),
        })
        .collect();
    files.push(ModelFileDigest {
        path: "model.sig".into(),
        digest: crate::observe::sha256_digest(b"old"),
    });
    files
}

fn real_statement() -> Value {
    let bundle: Value = serde_json::from_str(REAL_SIGNATURE).expect("the fixture is JSON");
    let payload = STANDARD
        .decode(bundle["dsseEnvelope"]["payload"].as_str().expect("payload"))
        .expect("base64");
    serde_json::from_slice(&payload).expect("the payload is JSON")
}

#[test]
fn statement_is_the_one_model_signing_writes_for_the_same_files() {
    let ours = statement("m2", &fixture()).expect("builds");
    let mut theirs = real_statement();
    // model_signing writes ignore_paths in a Python set's order (it changes from run to run).
    let mut ignored: Vec<String> =
        serde_json::from_value(theirs["predicate"]["serialization"]["ignore_paths"].take())
            .expect("a list");
    ignored.sort();
    theirs["predicate"]["serialization"]["ignore_paths"] = ignored.into();
    let ours_value: Value =
        serde_json::from_slice(&ours.to_bytes().expect("serializes")).expect("JSON");
    assert_eq!(ours_value, theirs);
    // The parts that must match byte for byte: the order of resources and the root digest.
    let names: Vec<&str> = ours
        .predicate
        .resources
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            ".hidden",
            "B",
            "a/b/c",
            "a-b",
            "a.b/c",
            "sp ace",
            "sub/ligne",
            "é.bin"
        ]
    );
    assert_eq!(
        ours.subject_digest().expect("one subject"),
        "266aa22995b72e600048c7f41fc98e3e194a2a621836eb05b85b4fd7d0804add"
    );
}

#[test]
fn statement_bytes_are_compact_in_model_signing_field_order() {
    let files = [ModelFileDigest {
        path: "w.bin".into(),
        digest: format!("sha256:{}", "ab".repeat(32)),
    }];
    let bytes = statement("m", &files)
        .expect("builds")
        .to_bytes()
        .expect("serializes");
    let root = hex::encode(Sha256::digest([0xabu8; 32]));
    assert_eq!(
        std::str::from_utf8(&bytes).expect("utf-8"),
        format!(
            r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"name":"m","digest":{{"sha256":"{root}"}}}}],"predicateType":"https://model_signing/signature/v1.0","predicate":{{"serialization":{{"method":"files","hash_type":"sha256","allow_symlinks":false,"ignore_paths":[".git",".gitattributes",".github",".gitignore","model.sig"]}},"resources":[{{"name":"w.bin","algorithm":"sha256","digest":"{}"}}]}}}}"#,
            "ab".repeat(32)
        )
    );
}

#[test]
fn the_order_of_the_input_does_not_matter() {
    let mut files = fixture();
    let a = statement("m", &files).expect("builds");
    files.reverse();
    assert_eq!(statement("m", &files).expect("builds"), a);
}

#[test]
fn a_statement_read_back_gives_the_same_statement() {
    let ours = statement("m2", &fixture()).expect("builds");
    let back: ModelSignatureStatement =
        serde_json::from_slice(&ours.to_bytes().expect("serializes")).expect("reads");
    assert_eq!(back, ours);
    // And model_signing's own (a predicate field order of its choosing, pretty-printed).
    let theirs: ModelSignatureStatement =
        serde_json::from_value(real_statement()).expect("reads model_signing's statement");
    assert_eq!(theirs.predicate.resources, ours.predicate.resources);
    assert_eq!(
        root_digest(&theirs.predicate.resources),
        ours.subject_digest().unwrap()
    );
}

#[test]
fn only_model_signings_default_paths_are_left_out() {
    for ignored in [
        ".git",
        ".git/x",
        ".github/a/b",
        ".gitignore",
        ".gitattributes",
        "model.sig",
    ] {
        assert!(is_ignored(ignored), "{ignored}");
    }
    for kept in [
        ".gitx",
        "a/.git",
        "model.sig.bak",
        "sub/model.sig",
        ".gitignore2",
        "x",
    ] {
        assert!(!is_ignored(kept), "{kept}");
    }
}

#[test]
fn bad_files_are_refused_naming_the_file() {
    let ok = |path: &str| ModelFileDigest {
        path: path.into(),
        digest: format!("sha256:{}", "0".repeat(64)),
    };
    for path in ["", "/abs", "a//b", "a/", "./a", "a/../b", "..", "a\0b"] {
        let err = resources(&[ok(path)]).expect_err(path);
        assert_eq!(
            err,
            ModelSigningError::InvalidPath { path: path.into() },
            "{path:?}"
        );
        assert!(err.to_string().contains(&format!("{path:?}")), "{err}");
    }
    for digest in [
        "sha256:",
        "md5:00",
        &format!("sha256:{}", "A".repeat(64)),
        &"0".repeat(64),
    ] {
        let err = resources(&[ModelFileDigest {
            digest: digest.to_string(),
            ..ok("w.bin")
        }])
        .expect_err(digest);
        assert!(
            err.to_string().starts_with("model file w.bin: digest"),
            "{err}"
        );
    }
    let err = resources(&[ok("a"), ok("a")]).expect_err("twice");
    assert_eq!(err.to_string(), "model file a is listed twice");
    let err = resources(&[ok("a/b/c"), ok("a/b"), ok("a-b")]).expect_err("a file and a directory");
    assert_eq!(
        err.to_string(),
        "model file a/b is also a directory of a/b/c: the files cannot be written out"
    );
    assert!(statement("", &[ok("a")]).is_err());
    assert!(statement("a/b", &[ok("a")]).is_err());
}

#[test]
fn a_model_of_ignored_files_only_has_no_resources() {
    let files = [ModelFileDigest {
        path: ".gitignore".into(),
        digest: format!("sha256:{}", "0".repeat(64)),
    }];
    let s = statement("m", &files).expect("builds");
    assert!(s.predicate.resources.is_empty());
    // SHA-256 of nothing, as model_signing computes it for an empty manifest.
    assert_eq!(
        s.subject_digest().unwrap(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn subject_digest_requires_exactly_one_subject() {
    let mut s = statement("m", &fixture()).expect("builds");
    s.subject.push(s.subject[0].clone());
    assert_eq!(
        s.subject_digest().unwrap_err(),
        "expected exactly one subject, found 2"
    );
    s.subject.clear();
    assert!(s.subject_digest().is_err());
}
