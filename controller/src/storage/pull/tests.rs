use super::*;

fn manifest(titles: &[&str]) -> Vec<u8> {
    let layers: Vec<Value> = titles
        .iter()
        .map(|t| {
            serde_json::json!({
                "mediaType": "application/octet-stream",
                "digest": format!("sha256:{}", "a".repeat(64)),
                "size": 1,
                "annotations": {TITLE_ANNOTATION: t},
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"layers": layers})).unwrap()
}

#[test]
fn titles_that_leave_the_directory_are_refused() {
    for (title, why) in [
        ("../escape", "`..`"),
        ("a/../../b", "`..`"),
        ("/etc/passwd", "absolute"),
        ("a//b", "empty path component"),
        ("./a", "`.`"),
        ("", "empty title"),
    ] {
        let e = layers(&manifest(&["ok.bin", title])).unwrap_err();
        assert!(
            matches!(&e, PullError::Refused(m) if m.contains(why)),
            "{title:?}: {e}"
        );
    }
    let e = layers(&manifest(&["a", "a"])).unwrap_err();
    assert!(e.to_string().contains("twice"), "{e}");
    let e = layers(&manifest(&["a", "a/b"])).unwrap_err();
    assert!(e.to_string().contains("which is a file too"), "{e}");
    let got = layers(&manifest(&["model.json", "tok/vocab.txt"])).unwrap();
    assert_eq!(got.len(), 2);
}

#[test]
fn a_layer_without_title_or_digest_is_refused() {
    let m = serde_json::json!({"layers": [{"digest": format!("sha256:{}", "b".repeat(64)), "size": 3}]});
    let e = layers(&serde_json::to_vec(&m).unwrap()).unwrap_err();
    assert!(e.to_string().contains("not a model file"), "{e}");
    let m = serde_json::json!({"layers": [{"digest": "sha256:../../x", "size": 3}]});
    let e = layers(&serde_json::to_vec(&m).unwrap()).unwrap_err();
    assert!(e.to_string().contains("invalid digest"), "{e}");
    let e = layers(b"{\"manifests\": []}").unwrap_err();
    assert!(e.to_string().contains("no layers"), "{e}");
}

#[test]
fn the_destination_is_a_directory_or_created() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("models");
    prepare_destination(&dir).unwrap();
    assert!(dir.is_dir(), "created when absent");
    std::fs::create_dir_all(dir.join(".provenant-pull-0123/sub")).unwrap();
    std::fs::write(dir.join("old.bin"), b"x").unwrap();
    prepare_destination(&dir).unwrap();
    assert!(
        !dir.join(".provenant-pull-0123").exists(),
        "a stale staging dir is removed"
    );
    assert!(dir.join("old.bin").exists(), "nothing else is touched");
    let e = prepare_destination(&dir.join("old.bin")).unwrap_err();
    assert!(e.to_string().contains("not a directory"), "{e}");
}

#[test]
fn an_occupied_destination_must_hold_exactly_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir(dir.join("tok")).unwrap();
    std::fs::write(dir.join("model.bin"), b"w").unwrap();
    std::fs::write(dir.join("tok/vocab.txt"), b"v").unwrap();
    let layer = |title: &str, bytes: &[u8]| Layer {
        title: title.into(),
        digest: crate::observe::sha256_digest(bytes),
        size: bytes.len() as u64,
    };
    let layers = [layer("model.bin", b"w"), layer("tok/vocab.txt", b"v")];
    let pulled = check_existing(dir, &layers).unwrap();
    assert!(pulled.already_there);
    assert_eq!(pulled.files.len(), 2);
    let e = check_existing(
        dir,
        &[layer("model.bin", b"w"), layer("tok/vocab.txt", b"V")],
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("tok/vocab.txt is not one of its files"),
        "{e}"
    );
    let e = check_existing(dir, &layers[..1]).unwrap_err();
    assert!(
        e.to_string()
            .contains("tok/vocab.txt is not one of its files"),
        "{e}"
    );
    std::fs::remove_file(dir.join("model.bin")).unwrap();
    let e = check_existing(dir, &layers).unwrap_err();
    assert!(e.to_string().contains("model.bin is missing"), "{e}");
}
