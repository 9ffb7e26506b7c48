//! Benchmark 5, hashing: `provenant::hashing::hash_tree` on a generated directory (a few large
//! files and thousands of small ones), page cache warm and cold, beside, in the same run: the
//! hardware's SHA-256 rate (`openssl speed -evp sha256`, one process, × cores: the target's
//! baseline), what the cores deliver together right now (`openssl speed -multi <cores>`,
//! informational: the machine may be shared), `openssl dgst -sha256` on the largest file, and
//! `model_signing sign key` (OpenSSF model-signing) on the same directory. Peak RSS of hashing the
//! big file vs a small file shows memory is flat in file size.
//!
//! Each timed hash_tree run directly follows an openssl speed pair and an untimed pass over the
//! tree: the ratio then compares figures taken under the same load, and the tree is in the page
//! cache (some machines reclaim idle page cache within a minute, e.g. DAMON).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::table::{Row, bench_dir, median, print_table, write_report};

const MIB: u64 = 1 << 20;
/// Targets.
const TARGET_HW: f64 = 0.85;
const TARGET_VS_MODEL_SIGNING: f64 = 1.5;

/// The generated tree: big file sizes (MiB) and the number of small files.
struct Shape {
    name: &'static str,
    big_mib: &'static [u64],
    small_files: usize,
}

const SHORT: Shape = Shape {
    name: "tree-1g",
    big_mib: &[384, 256, 192],
    small_files: 3000,
};
const FULL: Shape = Shape {
    name: "tree-4g",
    big_mib: &[1536, 1024, 768, 512],
    small_files: 4000,
};

/// Fast non-zero pseudo-random bytes (xorshift64*).
struct Noise(u64);

impl Noise {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn write_file(path: &Path, size: u64, noise: &mut Noise, buf: &mut [u8]) -> Result<()> {
    let mut out = BufWriter::with_capacity(
        MIB as usize,
        File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        noise.fill(&mut buf[..n]);
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(())
}

/// Small file sizes: 1 KiB .. 128 KiB, mean ≈ 64 KiB, deterministic.
fn small_size(i: usize) -> u64 {
    1024 + ((i as u64).wrapping_mul(2_654_435_761) % 127) * 1024
}

/// Generates the tree once (reused while its marker exists). Returns (root, big file, small file).
fn ensure_data(shape: &Shape) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let data = bench_dir()?.join("data");
    let root = data.join(shape.name);
    let marker = data.join(format!("{}.complete", shape.name));
    let small_single = data.join("single-small.bin");
    let big = root.join("big-0.safetensors");
    if marker.exists() && small_single.exists() {
        return Ok((root, big, small_single));
    }
    println!("generating {} (once) ...", root.display());
    let t = Instant::now();
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    std::fs::create_dir_all(&root)?;
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let mut buf = vec![0u8; MIB as usize];
    for (i, mib) in shape.big_mib.iter().enumerate() {
        write_file(
            &root.join(format!("big-{i}.safetensors")),
            mib * MIB,
            &mut noise,
            &mut buf,
        )?;
    }
    for i in 0..shape.small_files {
        let dir = root.join(format!("shards/{:03}", i / 100));
        std::fs::create_dir_all(&dir)?;
        write_file(
            &dir.join(format!("part-{i:05}.bin")),
            small_size(i),
            &mut noise,
            &mut buf,
        )?;
    }
    write_file(&small_single, MIB, &mut noise, &mut buf)?;
    std::fs::write(&marker, b"")?;
    println!("generated in {:.1} s", t.elapsed().as_secs_f64());
    Ok((root, big, small_single))
}

fn files_of(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    Ok(out)
}

/// Evicts the tree from the page cache: `drop_caches` when permitted and effective, else fsync +
/// `posix_fadvise(POSIX_FADV_DONTNEED)` per file. Returns the method that worked.
/// `probe` (a big file of the tree) is checked with mincore: a write to `drop_caches` that is
/// accepted but does nothing (containers) does not count.
fn evict(files: &[PathBuf], probe: &Path) -> Result<&'static str> {
    // SAFETY: sync has no preconditions; drop_caches only drops clean pages.
    unsafe { libc::sync() };
    if std::fs::write("/proc/sys/vm/drop_caches", b"3").is_ok() && resident_fraction(probe)? < 0.05
    {
        return Ok("drop_caches");
    }
    for path in files {
        let file = File::open(path)?;
        file.sync_all()?;
        // SAFETY: a valid open descriptor; advice only, no memory is touched.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            bail!("posix_fadvise({}): error {rc}", path.display());
        }
    }
    Ok("posix_fadvise(DONTNEED) per file after fsync")
}

/// Fraction of `path`'s pages resident in the page cache (mincore), to check eviction worked.
fn resident_fraction(path: &Path) -> Result<f64> {
    let file = File::open(path)?;
    let len = file.metadata()?.len() as usize;
    if len == 0 {
        return Ok(0.0);
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
    // SAFETY: a read-only shared mapping of an open file of `len` bytes; never dereferenced,
    // only passed to mincore, and unmapped below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        bail!("mmap {}", path.display());
    }
    let pages = len.div_ceil(page);
    let mut vec = vec![0u8; pages];
    // SAFETY: `addr` maps `len` bytes; `vec` has one byte per page.
    let rc = unsafe { libc::mincore(addr, len, vec.as_mut_ptr()) };
    // SAFETY: unmapping exactly what was mapped.
    unsafe { libc::munmap(addr, len) };
    if rc != 0 {
        bail!("mincore {}", path.display());
    }
    Ok(vec.iter().filter(|b| *b & 1 == 1).count() as f64 / pages as f64)
}

fn time_hash_tree(root: &Path) -> Result<(f64, usize, String)> {
    let t = Instant::now();
    let files = provenant::hashing::hash_tree(root)?;
    let secs = t.elapsed().as_secs_f64();
    Ok((secs, files.len(), provenant::hashing::tree_digest(&files)))
}

fn run_cmd(cmd: &mut Command) -> Result<(f64, String)> {
    let t = Instant::now();
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((secs, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// `openssl speed [-multi <processes>] -evp sha256 -seconds 3 -bytes 16384`: bytes/s of one
/// process (`processes` 1), or of all of them together.
fn openssl_speed(processes: usize) -> Result<f64> {
    let mut cmd = Command::new("openssl");
    cmd.arg("speed");
    if processes > 1 {
        cmd.args(["-multi", &processes.to_string()]);
    }
    cmd.args(["-evp", "sha256", "-seconds", "3", "-bytes", "16384"]);
    let (_, out) = run_cmd(&mut cmd)?;
    // Last line: `sha256   1234567.89k` (1000s of bytes per second; with -multi, the sum).
    out.lines()
        .rev()
        .find_map(|l| {
            let last = l.split_whitespace().last()?;
            last.strip_suffix('k')?.parse::<f64>().ok()
        })
        .map(|k| k * 1000.0)
        .ok_or_else(|| anyhow!("cannot parse openssl speed output: {out}"))
}

/// Peak RSS (KiB) of a child process hashing `path` (`provenant-bench hash-one <path>`).
fn child_peak_rss_kib(path: &Path) -> Result<u64> {
    let exe = std::env::current_exe()?;
    let (_, out) = run_cmd(Command::new(exe).arg("hash-one").arg(path))?;
    out.lines()
        .find_map(|l| l.strip_prefix("peak_rss_kib ")?.trim().parse().ok())
        .ok_or_else(|| anyhow!("hash-one printed no peak_rss_kib: {out}"))
}

/// Entry of `provenant-bench hash-one <path>`: hash, print the digest and this process's peak RSS.
pub fn hash_one(path: &Path) -> Result<()> {
    let files = provenant::hashing::hash_tree(path)?;
    println!("digest {}", provenant::hashing::tree_digest(&files));
    let status = std::fs::read_to_string("/proc/self/status")?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .ok_or_else(|| anyhow!("no VmHWM in /proc/self/status"))?;
    println!("peak_rss_kib {hwm}");
    Ok(())
}

/// `/proc/loadavg`'s 1-minute figure ("?" where there is none): the machine may be shared.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn model_signing_available() -> bool {
    Command::new("model_signing")
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn run(full: bool) -> Result<()> {
    let mode = if full { "full" } else { "short" };
    let shape = if full { &FULL } else { &SHORT };
    let (warm_runs, cold_runs, other_runs) = if full { (5, 3, 3) } else { (3, 2, 2) };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (root, big, small) = ensure_data(shape)?;
    let files = files_of(&root)?;
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    let big_size = std::fs::metadata(&big)?.len();
    let gib = total as f64 / (1u64 << 30) as f64;
    println!(
        "hashing {}: {} files, {:.2} GiB",
        root.display(),
        files.len(),
        gib
    );

    let load_before = load_average();
    // Warm, paired with the hardware baselines: per run, openssl speed per core and -multi, then
    // an untimed pass (fills the page cache), then the timed pass.
    let (_, count, digest) = time_hash_tree(&root)?;
    let mut warm = Vec::new();
    let mut speed = Vec::new();
    let mut speed_multi = Vec::new();
    for _ in 0..warm_runs {
        speed.push(openssl_speed(1)?);
        speed_multi.push(openssl_speed(cores)?);
        time_hash_tree(&root)?;
        warm.push(time_hash_tree(&root)?.0);
    }
    // openssl dgst and provenant on the big file alone (single-file rate), each right after an
    // untimed pass over it.
    let mut dgst = Vec::new();
    let mut big_alone = Vec::new();
    for _ in 0..other_runs {
        time_hash_tree(&big)?;
        dgst.push(run_cmd(Command::new("openssl").args(["dgst", "-sha256"]).arg(&big))?.0);
        time_hash_tree(&big)?;
        big_alone.push(time_hash_tree(&big)?.0);
    }

    // model_signing sign key on the same directory (warm cache, as provenant's warm runs).
    let data = bench_dir()?.join("data");
    let key = data.join("model-signing-key.pem");
    if !key.exists() {
        run_cmd(
            Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                ])
                .arg(&key),
        )?;
    }
    let mut model_signing = Vec::new();
    let mut model_signing_error = None;
    if model_signing_available() {
        for _ in 0..other_runs {
            // Warm, as provenant's runs.
            time_hash_tree(&root)?;
            match run_cmd(
                Command::new("model_signing")
                    .args(["sign", "key", "--private_key"])
                    .arg(&key)
                    .arg("--signature")
                    .arg(data.join("model.sig"))
                    .arg(&root),
            ) {
                Ok((secs, _)) => model_signing.push(secs),
                Err(e) => {
                    model_signing_error = Some(e.to_string());
                    break;
                }
            }
        }
    } else {
        model_signing_error =
            Some("model_signing not on PATH (pip install model-signing pyopenssl)".into());
    }

    // Cold: evict, check, hash.
    let mut cold = Vec::new();
    let mut evict_method = "";
    let mut resident_after_evict = Vec::new();
    for _ in 0..cold_runs {
        evict_method = evict(&files, &big)?;
        resident_after_evict.push(resident_fraction(&big)?);
        cold.push(time_hash_tree(&root)?.0);
    }

    // Memory: peak RSS of a process hashing the big file vs a 1 MiB file, and the whole tree.
    let rss_big = child_peak_rss_kib(&big)?;
    let rss_small = child_peak_rss_kib(&small)?;
    let rss_tree = child_peak_rss_kib(&root)?;

    let warm_s = median(&warm);
    let cold_s = median(&cold);
    let warm_rate = total as f64 / warm_s;
    let cold_rate = total as f64 / cold_s;
    let per_core = median(&speed);
    let hw = per_core * cores as f64;
    let hw_ratio = warm_rate / hw;
    let multi = median(&speed_multi);
    let multi_ratio = warm_rate / multi;
    let load_after = load_average();
    let dgst_rate = big_size as f64 / median(&dgst);
    let big_rate = big_size as f64 / median(&big_alone);
    let mibs = |r: f64| format!("{:.0} MiB/s", r / MIB as f64);

    let mut rows = vec![
        Row::check(
            format!("hash_tree warm, {gib:.2} GiB, {count} files"),
            format!("{} ({warm_s:.2} s)", mibs(warm_rate)),
            format!("openssl speed {} /core × {cores}", mibs(per_core)),
            hw_ratio,
            format!("≥ {TARGET_HW}×"),
            hw_ratio >= TARGET_HW,
        ),
        Row::check(
            format!("  same runs vs openssl speed -multi {cores} (informational)"),
            mibs(warm_rate),
            format!(
                "openssl speed -multi {cores} {} (cores together, now)",
                mibs(multi)
            ),
            multi_ratio,
            "(informational)",
            true,
        ),
        Row::info(
            "  load average (1 min) before / after",
            format!("{load_before} / {load_after}"),
        ),
        Row::check(
            "hash_tree cold",
            format!("{} ({cold_s:.2} s)", mibs(cold_rate)),
            format!("warm {}", mibs(warm_rate)),
            cold_rate / warm_rate,
            "(informational)",
            true,
        ),
        Row::info(
            "  eviction",
            format!(
                "{evict_method}; big file resident after: {:.0}%",
                median(&resident_after_evict) * 100.0
            ),
        ),
        Row::check(
            "hash_tree, big file alone (1 file, warm)",
            mibs(big_rate),
            format!("openssl dgst -sha256 {}", mibs(dgst_rate)),
            big_rate / dgst_rate,
            "(informational)",
            true,
        ),
    ];
    if model_signing.is_empty() {
        rows.push(Row::info(
            "model_signing sign key",
            format!(
                "not measured: {}",
                model_signing_error.clone().unwrap_or_default()
            ),
        ));
    } else {
        let ms = median(&model_signing);
        let speedup = ms / warm_s;
        rows.push(Row::check(
            "speed-up vs model_signing sign key (warm)",
            format!("{warm_s:.2} s"),
            format!("model_signing {ms:.2} s"),
            speedup,
            format!("≥ {TARGET_VS_MODEL_SIGNING}× faster"),
            speedup >= TARGET_VS_MODEL_SIGNING,
        ));
    }
    // Flat: the big file costs at most 16 MiB more than a 1 MiB file (buffers are 1 MiB/worker).
    let flat = rss_big <= rss_small + 16 * 1024;
    rows.push(Row::check(
        format!("peak RSS hashing {} MiB file", big_size / MIB),
        format!("{:.1} MiB", rss_big as f64 / 1024.0),
        format!("1 MiB file: {:.1} MiB", rss_small as f64 / 1024.0),
        rss_big as f64 / rss_small.max(1) as f64,
        "flat (≤ +16 MiB)",
        flat,
    ));
    rows.push(Row::info(
        "  peak RSS hashing the whole tree",
        format!("{:.1} MiB", rss_tree as f64 / 1024.0),
    ));

    print_table(&format!("5. Hashing ({mode})"), &rows);
    let raw: Value = json!({
        "root": root.display().to_string(),
        "files": count,
        "bytes": total,
        "tree_digest": digest,
        "big_file": big.display().to_string(),
        "big_file_bytes": big_size,
        "cores": cores,
        "hash_tree_warm_s": warm,
        "hash_tree_cold_s": cold,
        "warm_bytes_per_s": warm_rate,
        "cold_bytes_per_s": cold_rate,
        "evict_method": evict_method,
        "big_file_resident_fraction_after_evict": resident_after_evict,
        "openssl_speed_bytes_per_s_per_core": speed,
        "hardware_bytes_per_s": hw,
        "ratio_to_hardware": hw_ratio,
        "openssl_speed_multi_bytes_per_s": speed_multi,
        "ratio_to_openssl_speed_multi": multi_ratio,
        "paired_ratios_to_hardware": warm.iter().zip(&speed).map(|(w, s)| total as f64 / w / (s * cores as f64)).collect::<Vec<_>>(),
        "paired_ratios_to_multi": warm.iter().zip(&speed_multi).map(|(w, m)| total as f64 / w / m).collect::<Vec<_>>(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "openssl_dgst_big_s": dgst,
        "openssl_dgst_big_bytes_per_s": dgst_rate,
        "hash_tree_big_alone_s": big_alone,
        "hash_tree_big_alone_bytes_per_s": big_rate,
        "model_signing_s": model_signing,
        "model_signing_error": model_signing_error,
        "model_signing_command": format!("model_signing sign key --private_key {} --signature {} {}",
            key.display(), data.join("model.sig").display(), root.display()),
        "speedup_vs_model_signing": if model_signing.is_empty() { Value::Null } else { json!(median(&model_signing) / warm_s) },
        "peak_rss_kib_big_file": rss_big,
        "peak_rss_kib_small_file": rss_small,
        "peak_rss_kib_tree": rss_tree,
        "memory_flat": flat,
        "targets": {"hardware_ratio": TARGET_HW, "vs_model_signing": TARGET_VS_MODEL_SIGNING},
    });
    write_report("hashing", mode, &rows, raw)?;
    Ok(())
}
