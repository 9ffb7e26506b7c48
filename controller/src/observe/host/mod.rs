//! What `provenant attest` observes about the host it runs a training command on: the git
//! checkout of the code, the NVIDIA GPUs (via `nvidia-smi`) and basic host facts. Each probe
//! runs an external command with a timeout and yields nothing rather than failing when the tool
//! is missing or broken: the caller records that absence. Parsers are pure functions.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::api::AcceleratorFacts;

/// Environment variable naming the `nvidia-smi` binary to run (tests, unusual installs).
pub const NVIDIA_SMI_ENV: &str = "PROVENANT_NVIDIA_SMI";
/// The query `accelerators` runs; fields every driver since the R3xx series supports.
pub const NVIDIA_SMI_QUERY: [&str; 2] = [
    "--query-gpu=name,memory.total,driver_version",
    "--format=csv,noheader,nounits",
];
/// `nvidia-smi` hangs for minutes when the driver is wedged.
const NVIDIA_SMI_TIMEOUT: Duration = Duration::from_secs(15);
/// `git status` on a large checkout with a cold cache can be slow, but must not hang attest.
const GIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Output kept from a probe; the rest is drained so the child never blocks on a full pipe.
const MAX_OUTPUT: usize = 1 << 20;

/// The git checkout the code came from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GitRevision {
    /// Full hex object name of `HEAD` (40 hex for SHA-1 repositories, 64 for SHA-256).
    pub commit: String,
    /// The work tree differs from `HEAD`: modified, staged or untracked (not ignored) files.
    /// Also true when `git status` could not tell.
    pub dirty: bool,
    /// URL of the `origin` remote, with any credentials removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

/// Basic facts about the host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HostFacts {
    pub hostname: String,
    /// `linux`, `macos`, ... (Rust's `std::env::consts::OS`).
    pub os: String,
    /// The distribution's `PRETTY_NAME` from os-release, e.g. `Debian GNU/Linux 12 (bookworm)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<String>,
    /// `x86_64`, `aarch64`, ... (`std::env::consts::ARCH`).
    pub arch: String,
    /// CPUs this process may use (affinity and cgroup quota applied), not the machine's total.
    pub cpus: usize,
    /// Kernel release (`uname -r`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
}

/// Run a probe with a timeout. `Err` carries why, for debug logs.
fn run(mut cmd: Command, timeout: Duration) -> Result<String, String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    // Each pipe is drained on its own thread so the child never blocks on a full pipe; the
    // result comes back on a channel, so that a grandchild keeping a pipe open cannot hang us.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            if let Some(mut pipe) = pipe {
                let mut chunk = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    let room = MAX_OUTPUT.saturating_sub(kept.len());
                    kept.extend_from_slice(&chunk[..n.min(room)]);
                }
            }
            let _ = tx.send(kept);
        });
        rx
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(match other {
                    Err(e) => format!("{program}: {e}"),
                    _ => format!("{program}: timed out after {timeout:?}"),
                });
            }
        }
    };
    let collect = |rx: mpsc::Receiver<Vec<u8>>| {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        String::from_utf8_lossy(&rx.recv_timeout(wait).unwrap_or_default()).into_owned()
    };
    let stdout = collect(stdout);
    if status.success() {
        Ok(stdout)
    } else {
        let stderr = collect(stderr);
        Err(format!(
            "{program}: {status}: {}",
            if stderr.trim().is_empty() {
                stdout.trim()
            } else {
                stderr.trim()
            }
        ))
    }
}

fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("git");
    cmd.arg("-C")
        .arg(dir)
        .args(args)
        // Never write the index (a concurrent git in the same checkout would see a lock) and
        // never ask for credentials.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("GIT_TERMINAL_PROMPT", "0");
    run(cmd, GIT_TIMEOUT)
}

/// The git checkout containing `dir`: `HEAD`'s commit, whether the work tree is dirty, and the
/// `origin` URL. `None` when `dir` is not in a git work tree, `HEAD` has no commit yet, git is
/// missing, or git refuses the repository (e.g. `safe.directory` ownership checks).
pub fn git_revision(dir: &Path) -> Option<GitRevision> {
    let commit = match git(dir, &["rev-parse", "--verify", "HEAD^{commit}"]) {
        Ok(out) => out.trim().to_string(),
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "no git revision");
            return None;
        }
    };
    if !matches!(commit.len(), 40 | 64) || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        tracing::debug!(dir = %dir.display(), %commit, "unexpected git rev-parse output");
        return None;
    }
    let dirty = match git(dir, &["status", "--porcelain"]) {
        Ok(out) => !out.trim().is_empty(),
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "git status failed; recorded as dirty");
            true
        }
    };
    let remote = git(dir, &["remote", "get-url", "origin"])
        .ok()
        .map(|url| redact_url(url.trim()))
        .filter(|url| !url.is_empty());
    Some(GitRevision {
        commit: commit.to_ascii_lowercase(),
        dirty,
        remote,
    })
}

/// A remote URL without credentials, which would otherwise end up in signed provenance:
/// `https://user:token@host/x` and `https://token@host/x` become `https://host/x`; for other
/// schemes only a password is dropped (`ssh://git@host/x` is kept). scp-like `git@host:x` has no
/// password and is kept.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    let http = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
    match userinfo.split_once(':') {
        Some((user, _password)) if !http => format!("{scheme}://{user}@{host}{path}"),
        _ if http => format!("{scheme}://{host}{path}"),
        _ => url.to_string(),
    }
}

/// The `nvidia-smi` to run: `$PROVENANT_NVIDIA_SMI` if set and non-empty, else `nvidia-smi`
/// from `PATH`.
pub fn nvidia_smi_binary(env_value: Option<OsString>) -> PathBuf {
    env_value
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nvidia-smi"))
}

/// The host's NVIDIA GPUs, one entry per GPU in `nvidia-smi` order; empty when `nvidia-smi` is
/// absent, fails (no driver, no device) or times out. See [`parse_nvidia_smi`] for what each
/// field holds, and [`host_accelerator`] for the one record of a worker.
pub fn accelerators() -> Vec<AcceleratorFacts> {
    accelerators_with(&nvidia_smi_binary(std::env::var_os(NVIDIA_SMI_ENV)))
}

/// [`accelerators`] with an explicit `nvidia-smi` binary.
pub fn accelerators_with(nvidia_smi: &Path) -> Vec<AcceleratorFacts> {
    let mut query = Command::new(nvidia_smi);
    query.args(NVIDIA_SMI_QUERY);
    let csv = match run(query, NVIDIA_SMI_TIMEOUT) {
        Ok(out) => out,
        Err(e) => {
            tracing::debug!(error = %e, "no accelerators observed");
            return Vec::new();
        }
    };
    // The CUDA version is only in the summary's header; asked only when there are GPUs.
    let summary = if csv.trim().is_empty() {
        None
    } else {
        run(Command::new(nvidia_smi), NVIDIA_SMI_TIMEOUT).ok()
    };
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    parse_nvidia_smi(&csv, summary.as_deref(), visible.as_deref())
}

/// A GPU line of the query: name, memory.total (MiB, if known), driver_version.
type GpuLine<'a> = (&'a str, Option<&'a str>, &'a str);

/// One GPU line of the query: `name, memory.total (MiB), driver_version`.
fn parse_gpu_line(line: &str) -> Option<GpuLine<'_>> {
    // From the right: the fixed fields are numbers, a product name could hold a comma.
    let mut fields = line.rsplitn(3, ',').map(str::trim);
    let driver = fields.next()?;
    let memory = fields.next()?;
    let name = fields.next()?;
    let version_like = |s: &str| {
        !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && s.bytes().next().is_some_and(|b| b.is_ascii_digit())
    };
    if name.is_empty() || !version_like(driver) {
        return None;
    }
    let memory = if memory.bytes().all(|b| b.is_ascii_digit()) && !memory.is_empty() {
        Some(memory)
    } else if memory.starts_with('[') {
        // `[N/A]`, `[Insufficient Permissions]`: the GPU is there, its memory unknown.
        None
    } else {
        return None;
    };
    Some((name, memory, driver))
}

/// The `CUDA Version: X.Y` of `nvidia-smi`'s summary header (the CUDA version the driver
/// supports), and the header line itself.
fn parse_cuda_version(summary: &str) -> Option<(String, String)> {
    let line = summary.lines().find(|l| l.contains("CUDA Version"))?;
    let after = line.split("CUDA Version:").nth(1)?.trim_start();
    let version: String = after
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    if version.is_empty() {
        return None; // `CUDA Version: N/A`
    }
    let header = line
        .trim_matches(|c: char| c == '|' || c.is_whitespace())
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    Some((version, header))
}

/// Parse `nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader,nounits`
/// output (`csv`), the plain `nvidia-smi` summary (for the CUDA version), and
/// `CUDA_VISIBLE_DEVICES`, into one entry per GPU:
///
/// - `product`: the name as `nvidia-smi` prints it (`NVIDIA H100 80GB HBM3`; GPU feature
///   discovery labels the same name with `-` for spaces);
/// - `count`: GPUs on the host with the same name, memory and driver (all of them on the usual
///   uniform host), not only those visible to the training;
/// - `memory`: MiB per GPU, the unit of the GPU feature discovery label; absent if `[N/A]`;
/// - `driverVersion`; `cudaVersion`: the CUDA version the driver supports (summary header);
/// - `labels`, the raw evidence: `nvidia-smi/gpu.<index>` = the GPU's query line (index =
///   nvidia-smi's order), `nvidia-smi/header` = the summary line with the driver and CUDA
///   versions, `env/CUDA_VISIBLE_DEVICES` when set.
///
/// Lines that are not GPU lines (the "NVIDIA-SMI has failed ..." or "No devices were found"
/// messages) are ignored, so a failing `nvidia-smi` yields no entries.
pub fn parse_nvidia_smi(
    csv: &str,
    summary: Option<&str>,
    cuda_visible_devices: Option<&str>,
) -> Vec<AcceleratorFacts> {
    let cuda = summary.and_then(parse_cuda_version);
    let gpus: Vec<(&str, GpuLine)> = csv
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter_map(|l| parse_gpu_line(l).map(|gpu| (l, gpu)))
        .collect();
    gpus.iter()
        .enumerate()
        .map(|(index, (line, gpu @ (name, memory, driver)))| {
            let same = gpus.iter().filter(|(_, other)| other == gpu).count();
            let mut labels =
                BTreeMap::from([(format!("nvidia-smi/gpu.{index}"), line.to_string())]);
            if let Some((_, header)) = &cuda {
                labels.insert("nvidia-smi/header".to_string(), header.clone());
            }
            if let Some(visible) = cuda_visible_devices {
                labels.insert("env/CUDA_VISIBLE_DEVICES".to_string(), visible.to_string());
            }
            AcceleratorFacts {
                product: Some(name.to_string()),
                count: Some(same.to_string()),
                memory: memory.map(str::to_string),
                driver_version: Some(driver.to_string()),
                cuda_version: cuda.as_ref().map(|(v, _)| v.clone()),
                labels,
                ..AcceleratorFacts::default()
            }
        })
        .collect()
}

/// The host's GPUs as the one accelerator record of a worker: `count` = all GPUs; `product`,
/// `memory`, `driverVersion`, `cudaVersion` as the GPUs say when they agree. On a mixed host the
/// products are listed in `nvidia-smi` order, joined with `, ` (`NVIDIA A100-SXM4-80GB, Tesla
/// T4`), and a differing memory, driver or CUDA version is left out. `labels` holds every GPU's
/// evidence. `None` without GPUs.
pub fn summarize_accelerators(gpus: &[AcceleratorFacts]) -> Option<AcceleratorFacts> {
    let first = gpus.first()?;
    let agreed = |field: fn(&AcceleratorFacts) -> &Option<String>| {
        gpus.iter()
            .all(|g| field(g) == field(first))
            .then(|| field(first).clone())
            .flatten()
    };
    let mut products: Vec<&str> = Vec::new();
    for p in gpus.iter().filter_map(|g| g.product.as_deref()) {
        if !products.contains(&p) {
            products.push(p);
        }
    }
    Some(AcceleratorFacts {
        product: (!products.is_empty()).then(|| products.join(", ")),
        count: Some(gpus.len().to_string()),
        memory: agreed(|g| &g.memory),
        driver_version: agreed(|g| &g.driver_version),
        cuda_version: agreed(|g| &g.cuda_version),
        labels: gpus
            .iter()
            .flat_map(|g| g.labels.iter().map(|(k, v)| (k.clone(), v.clone())))
            .collect(),
        ..AcceleratorFacts::default()
    })
}

/// [`summarize_accelerators`] of [`accelerators`]: this host's accelerator record, `None` (to be
/// recorded as "none") when no GPU is observed.
pub fn host_accelerator() -> Option<AcceleratorFacts> {
    summarize_accelerators(&accelerators())
}

/// `PRETTY_NAME` of an os-release file.
pub fn parse_os_release(text: &str) -> Option<String> {
    let value = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("PRETTY_NAME="))?
        .trim();
    let unquoted = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(value);
    let pretty = unquoted.replace("\\\"", "\"");
    (!pretty.is_empty()).then_some(pretty)
}

/// First non-empty line of a file, or of a command's output.
fn read_trimmed(path: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| line.to_string())
}

fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    let out = run(cmd, Duration::from_secs(5)).ok()?;
    let line = out.lines().next()?.trim();
    (!line.is_empty()).then(|| line.to_string())
}

/// Hostname, OS, distribution, architecture, usable CPUs and kernel release of this host.
pub fn host_facts() -> HostFacts {
    let hostname = read_trimmed("/proc/sys/kernel/hostname")
        .or_else(|| command_line("hostname", &[]))
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "unknown".to_string());
    let kernel =
        read_trimmed("/proc/sys/kernel/osrelease").or_else(|| command_line("uname", &["-r"]));
    let distribution = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| parse_os_release(&text));
    HostFacts {
        hostname,
        os: std::env::consts::OS.to_string(),
        distribution,
        arch: std::env::consts::ARCH.to_string(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernel,
    }
}

#[cfg(test)]
mod tests;
