//! The host probes' parsers, and the probes against stand-in tools.
use super::*;

const ONE_GPU: &str = "NVIDIA GeForce RTX 3090, 24576, 535.104.05\n";

const EIGHT_GPUS: &str = "\
NVIDIA H100 80GB HBM3, 81559, 535.129.03
NVIDIA H100 80GB HBM3, 81559, 535.129.03
NVIDIA H100 80GB HBM3, 81559, 535.129.03
NVIDIA H100 80GB HBM3, 81559, 535.129.03
NVIDIA H100 80GB HBM3, 81559, 535.129.03
NVIDIA H100 80GB HBM3, 81559, 535.129.03
NVIDIA H100 80GB HBM3, 81559, 535.129.03
NVIDIA H100 80GB HBM3, 81559, 535.129.03
";

const FAILED: &str = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA \
driver. Make sure that the latest NVIDIA driver is installed and running.\n\n";

const SUMMARY: &str = "\
Tue Nov 21 10:02:11 2023
+---------------------------------------------------------------------------------------+
| NVIDIA-SMI 535.129.03             Driver Version: 535.129.03   CUDA Version: 12.2     |
|-----------------------------------------+----------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id        Disp.A | Volatile Uncorr. ECC |
";

const SUMMARY_470: &str = "\
+-----------------------------------------------------------------------------+
| NVIDIA-SMI 470.57.02    Driver Version: 470.57.02    CUDA Version: 11.4     |
|-------------------------------+----------------------+----------------------+
";

#[test]
fn one_gpu() {
    let facts = parse_nvidia_smi(ONE_GPU, Some(SUMMARY_470), None);
    assert_eq!(facts.len(), 1);
    let f = &facts[0];
    assert_eq!(f.product.as_deref(), Some("NVIDIA GeForce RTX 3090"));
    assert_eq!(f.count.as_deref(), Some("1"));
    assert_eq!(f.memory.as_deref(), Some("24576"));
    assert_eq!(f.driver_version.as_deref(), Some("535.104.05"));
    assert_eq!(f.cuda_version.as_deref(), Some("11.4"));
    assert_eq!(
        f.labels.get("nvidia-smi/gpu.0").map(String::as_str),
        Some("NVIDIA GeForce RTX 3090, 24576, 535.104.05")
    );
    assert_eq!(
        f.labels.get("nvidia-smi/header").map(String::as_str),
        Some("NVIDIA-SMI 470.57.02 Driver Version: 470.57.02 CUDA Version: 11.4")
    );
    assert_eq!(summarize_accelerators(&facts).as_ref(), Some(f));
}

#[test]
fn eight_gpus() {
    let facts = parse_nvidia_smi(EIGHT_GPUS, Some(SUMMARY), Some("0,1,2,3"));
    assert_eq!(facts.len(), 8);
    for (i, f) in facts.iter().enumerate() {
        assert_eq!(f.product.as_deref(), Some("NVIDIA H100 80GB HBM3"));
        assert_eq!(f.count.as_deref(), Some("8"));
        assert_eq!(f.memory.as_deref(), Some("81559"));
        assert_eq!(f.driver_version.as_deref(), Some("535.129.03"));
        assert_eq!(f.cuda_version.as_deref(), Some("12.2"));
        assert!(f.labels.contains_key(&format!("nvidia-smi/gpu.{i}")));
    }
    let host = summarize_accelerators(&facts).unwrap();
    assert_eq!(host.product.as_deref(), Some("NVIDIA H100 80GB HBM3"));
    assert_eq!(host.count.as_deref(), Some("8"));
    assert_eq!(host.memory.as_deref(), Some("81559"));
    assert_eq!(host.cuda_version.as_deref(), Some("12.2"));
    // Evidence of every GPU, the header and the environment.
    assert_eq!(host.labels.len(), 8 + 2);
    assert_eq!(
        host.labels
            .get("env/CUDA_VISIBLE_DEVICES")
            .map(String::as_str),
        Some("0,1,2,3")
    );
}

#[test]
fn mixed_gpus_and_unknown_memory() {
    let csv = "NVIDIA A100-SXM4-80GB, 81920, 550.54.15\nTesla T4, [N/A], 550.54.15\n\
               NVIDIA A100-SXM4-80GB, 81920, 550.54.15\n";
    let facts = parse_nvidia_smi(csv, None, None);
    assert_eq!(facts.len(), 3);
    assert_eq!(
        (facts[0].product.as_deref(), facts[0].count.as_deref()),
        (Some("NVIDIA A100-SXM4-80GB"), Some("2"))
    );
    assert_eq!(
        (facts[1].product.as_deref(), facts[1].memory.as_deref()),
        (Some("Tesla T4"), None)
    );
    assert_eq!(facts[1].count.as_deref(), Some("1"));
    assert_eq!(facts[1].cuda_version, None);
    let host = summarize_accelerators(&facts).unwrap();
    assert_eq!(
        host.product.as_deref(),
        Some("NVIDIA A100-SXM4-80GB, Tesla T4")
    );
    assert_eq!(host.count.as_deref(), Some("3"));
    assert_eq!(host.memory, None);
    assert_eq!(host.driver_version.as_deref(), Some("550.54.15"));
    assert_eq!(host.labels.len(), 3);
}

#[test]
fn failing_driver_and_no_devices_give_nothing() {
    assert!(parse_nvidia_smi(FAILED, None, None).is_empty());
    assert!(parse_nvidia_smi("No devices were found\n", None, None).is_empty());
    assert!(parse_nvidia_smi("", Some(SUMMARY), None).is_empty());
    assert!(parse_nvidia_smi("a, b, c\n,,\n", None, None).is_empty());
    assert_eq!(summarize_accelerators(&[]), None);
}

#[test]
fn cuda_version_not_available() {
    let summary = "| NVIDIA-SMI 535.129.03   Driver Version: 535.129.03   CUDA Version: N/A |";
    let facts = parse_nvidia_smi(ONE_GPU, Some(summary), None);
    assert_eq!(facts[0].cuda_version, None);
    assert!(!facts[0].labels.contains_key("nvidia-smi/header"));
}

#[test]
fn remote_urls_lose_their_credentials() {
    for (url, want) in [
        (
            "https://user:ghp_secret@github.com/o/r.git",
            "https://github.com/o/r.git",
        ),
        (
            "https://ghp_secret@github.com/o/r.git",
            "https://github.com/o/r.git",
        ),
        ("https://github.com/o/r.git", "https://github.com/o/r.git"),
        (
            "ssh://git@github.com/o/r.git",
            "ssh://git@github.com/o/r.git",
        ),
        ("ssh://git:pw@host:22/o/r", "ssh://git@host:22/o/r"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("/srv/git/r.git", "/srv/git/r.git"),
        ("https://host/path@v1", "https://host/path@v1"),
    ] {
        assert_eq!(redact_url(url), want, "{url}");
    }
}

#[test]
fn os_release_pretty_name() {
    let text = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
    assert_eq!(
        parse_os_release(text).as_deref(),
        Some("Debian GNU/Linux 12 (bookworm)")
    );
    assert_eq!(
        parse_os_release("PRETTY_NAME=Alpine\n").as_deref(),
        Some("Alpine")
    );
    assert_eq!(parse_os_release("NAME=x\n"), None);
}

#[test]
fn binary_override() {
    assert_eq!(nvidia_smi_binary(None), PathBuf::from("nvidia-smi"));
    assert_eq!(
        nvidia_smi_binary(Some("".into())),
        PathBuf::from("nvidia-smi")
    );
    assert_eq!(
        nvidia_smi_binary(Some("/opt/fake".into())),
        PathBuf::from("/opt/fake")
    );
}

/// Write an executable script. Run once (retrying) before use: a thread of the test process
/// forking while the file was open for writing makes exec fail with ETXTBSY for a moment.
#[cfg(unix)]
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    for _ in 0..100 {
        let warm_up = Command::new(&path)
            .arg("--warm-up")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match warm_up {
            Err(e) if e.raw_os_error() == Some(26) => std::thread::sleep(Duration::from_millis(10)),
            _ => break,
        }
    }
    path
}

#[cfg(unix)]
#[test]
fn fake_nvidia_smi_is_run_and_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "if [ \"$1\" = '{}' ] && [ \"$2\" = '{}' ]; then\ncat <<'EOF'\n{EIGHT_GPUS}EOF\n\
         elif [ $# -eq 0 ]; then\ncat <<'EOF'\n{SUMMARY}EOF\nelse exit 2; fi\n",
        NVIDIA_SMI_QUERY[0], NVIDIA_SMI_QUERY[1]
    );
    let fake = script(dir.path(), "nvidia-smi", &body);
    let facts = accelerators_with(&fake);
    assert_eq!(facts.len(), 8, "{facts:?}");
    assert_eq!(facts[7].product.as_deref(), Some("NVIDIA H100 80GB HBM3"));
    assert_eq!(facts[7].count.as_deref(), Some("8"));
    assert_eq!(facts[7].cuda_version.as_deref(), Some("12.2"));
}

#[cfg(unix)]
#[test]
fn failing_or_missing_nvidia_smi_gives_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let failing = script(
        dir.path(),
        "nvidia-smi",
        &format!("printf '%s' \"{}\"\nexit 9\n", FAILED.trim()),
    );
    assert!(accelerators_with(&failing).is_empty());
    assert!(accelerators_with(&dir.path().join("absent")).is_empty());
}

#[cfg(unix)]
#[test]
fn a_hanging_probe_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let hang = script(
        dir.path(),
        "hang",
        "[ \"$1\" = --warm-up ] && exit 0\nexec sleep 30\n",
    );
    let started = Instant::now();
    let result = run(Command::new(&hang), Duration::from_millis(300));
    assert!(result.unwrap_err().contains("timed out"));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[cfg(unix)]
#[test]
fn a_grandchild_holding_the_pipe_does_not_hang_the_probe() {
    let dir = tempfile::tempdir().unwrap();
    let leaky = script(
        dir.path(),
        "leaky",
        "[ \"$1\" = --warm-up ] && exit 0\nsleep 3 &\necho out\n",
    );
    let started = Instant::now();
    assert!(run(Command::new(&leaky), Duration::from_millis(300)).is_ok());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn git_revision_of_a_checkout() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    let sh = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .output()
            .expect("git is installed");
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(git_revision(repo), None, "not a checkout yet");
    sh(&["init", "-q"]);
    assert_eq!(git_revision(repo), None, "no commit yet");
    std::fs::write(repo.join("train.py"), "print(1)\n").unwrap();
    sh(&["add", "train.py"]);
    sh(&["commit", "-q", "-m", "one"]);
    let head = sh(&["rev-parse", "HEAD"]).trim().to_string();
    let rev = git_revision(repo).expect("a checkout");
    assert_eq!(
        rev,
        GitRevision {
            commit: head.clone(),
            dirty: false,
            remote: None
        }
    );
    sh(&[
        "remote",
        "add",
        "origin",
        "https://bot:s3cret@git.example.com/ml/train.git",
    ]);
    std::fs::write(repo.join("notes.txt"), "untracked\n").unwrap();
    std::fs::create_dir(repo.join("sub")).unwrap();
    let rev = git_revision(&repo.join("sub")).expect("a subdirectory of the checkout");
    assert_eq!(rev.commit, head);
    assert!(rev.dirty);
    assert_eq!(
        rev.remote.as_deref(),
        Some("https://git.example.com/ml/train.git")
    );
}

#[test]
fn host_facts_are_filled() {
    let h = host_facts();
    assert!(!h.hostname.is_empty());
    assert_eq!(h.os, std::env::consts::OS);
    assert!(h.cpus >= 1);
    if cfg!(target_os = "linux") {
        assert!(h.kernel.is_some());
    }
}
