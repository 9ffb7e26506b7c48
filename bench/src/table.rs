//! Output shared by every benchmark binary: a result table (figure | baseline | ratio | target |
//! met?) printed to stdout, and a JSON report under `target/bench/<name>.json` carrying the raw
//! numbers, the command line, a timestamp and the machine description.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{Value, json};

/// One line of a result table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What is measured, e.g. `engine µs/op (2 workers)`.
    pub metric: String,
    /// The measured figure, formatted.
    pub figure: String,
    /// The baseline measured in the same run, formatted.
    pub baseline: String,
    /// figure ÷ baseline (or the ratio the target is stated in).
    pub ratio: Option<f64>,
    /// The target, e.g. `≤ 1.5×`.
    pub target: String,
    /// Whether the target is met; `None` for informational rows.
    pub met: Option<bool>,
}

impl Row {
    /// An informational row (no target).
    pub fn info(metric: impl Into<String>, figure: impl Into<String>) -> Self {
        Row {
            metric: metric.into(),
            figure: figure.into(),
            baseline: String::new(),
            ratio: None,
            target: String::new(),
            met: None,
        }
    }

    /// A row checked against a target.
    pub fn check(
        metric: impl Into<String>,
        figure: impl Into<String>,
        baseline: impl Into<String>,
        ratio: f64,
        target: impl Into<String>,
        met: bool,
    ) -> Self {
        Row {
            metric: metric.into(),
            figure: figure.into(),
            baseline: baseline.into(),
            ratio: Some(ratio),
            target: target.into(),
            met: Some(met),
        }
    }
}

/// Prints `rows` as an aligned plain-text table under `title`.
pub fn print_table(title: &str, rows: &[Row]) {
    let header = ["metric", "figure", "baseline", "ratio", "target", "met?"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.metric.clone(),
                r.figure.clone(),
                r.baseline.clone(),
                r.ratio.map(|x| format!("{x:.2}×")).unwrap_or_default(),
                r.target.clone(),
                match r.met {
                    Some(true) => "met".to_string(),
                    Some(false) => "NOT MET".to_string(),
                    None => String::new(),
                },
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: &[String]| {
        let mut s = String::from("|");
        for (c, w) in cols.iter().zip(widths) {
            let pad = w.saturating_sub(c.chars().count());
            s.push(' ');
            s.push_str(c);
            s.push_str(&" ".repeat(pad));
            s.push_str(" |");
        }
        s
    };
    println!("\n## {title}\n");
    println!("{}", line(&header.map(String::from)));
    let sep: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    println!("{}", line(&sep).replace(' ', "-"));
    for row in &cells {
        println!("{}", line(row));
    }
    println!();
}

/// `target/bench` of the workspace (created).
pub fn bench_dir() -> Result<PathBuf> {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Seconds since the Unix epoch.
pub fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The machine: cores, CPU model, SHA extensions, memory, kernel.
pub fn machine_info() -> Value {
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags") || l.starts_with("Features"))
        .unwrap_or_default();
    let sha_ni = flags
        .split_whitespace()
        .any(|f| f == "sha_ni" || f == "sha2");
    let mem_kib = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    json!({
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "cpu_model": model,
        "sha_extensions": sha_ni,
        "memory_mib": mem_kib / 1024,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
    })
}

/// Writes `target/bench/<name>.json`: `raw` plus the rows, the command line, the timestamp and
/// the machine. Returns the path.
pub fn write_report(name: &str, mode: &str, rows: &[Row], raw: Value) -> Result<PathBuf> {
    let path = bench_dir()?.join(format!("{name}.json"));
    let report = json!({
        "benchmark": name,
        "mode": mode,
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "timestamp_unix": unix_time(),
        "machine": machine_info(),
        "rows": rows,
        "raw": raw,
    });
    let bytes = serde_json::to_vec_pretty(&report)?;
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(path)
}

/// Median of `values` (0 when empty).
pub fn median(values: &[f64]) -> f64 {
    percentile(values, 50.0)
}

/// Nearest-rank percentile `p` (0..=100) of `values` (0 when empty).
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
