//! The `blackhole` benchmark (issue 14, point 5): a registry host that accepts connections and
//! never answers, for half of the runs, and the comparison of the healthy half's lag with the
//! clean run's.

use anyhow::Result;
use provenant_bench::table::{Row, print_table, write_report};
pub use provenant_testbed::blackhole::Blackhole;
use serde_json::json;

/// The model the dead runs report (never resolved: the host does not answer).
pub const DEAD_DIGEST: &str =
    "sha256:dead00000000000000000000000000000000000000000000000000000000dead";
/// Target: the healthy runs' p99 with a blackholed host, at most this many times the clean p99.
const RATIO_TARGET: f64 = 2.0;

pub fn dead_repository(host: &str) -> String {
    format!("{host}/models/dead")
}

/// The verdict: healthy runs' p99 with the other half blackholed, against the same healthy runs
/// submitted alone (`alone_p99`, the target's baseline) and, when it ran, the full clean run.
pub fn report(
    full: bool,
    rate: f64,
    alone_p99: f64,
    clean_p99: Option<f64>,
    blackholed_p99: f64,
) -> Result<()> {
    let ratio = blackholed_p99 / alone_p99.max(1e-9);
    let mut rows = vec![Row {
        metric: "healthy runs: completion → attached p99, other half blackholed".into(),
        figure: format!("{blackholed_p99:.1} ms"),
        baseline: format!("{alone_p99:.1} ms (the same healthy runs alone, p99)"),
        ratio: Some(ratio),
        target: format!("≤ {RATIO_TARGET}×"),
        met: Some(blackholed_p99 > 0.0 && ratio <= RATIO_TARGET),
    }];
    if let Some(clean) = clean_p99 {
        rows.push(Row {
            metric: "— against the full clean run (every run healthy, twice the load)".into(),
            figure: format!("{blackholed_p99:.1} ms"),
            baseline: format!("{clean:.1} ms (clean e2e, p99)"),
            ratio: Some(blackholed_p99 / clean.max(1e-9)),
            target: String::new(),
            met: None,
        });
    }
    print_table(
        &format!(
            "Fairness (issue 14, point 5): one registry host blackholed for half the runs, at {rate}/s"
        ),
        &rows,
    );
    let raw = json!({
        "rate_per_s": rate,
        "healthy_alone_p99_ms": alone_p99,
        "clean_p99_ms": clean_p99,
        "blackholed_healthy_p99_ms": blackholed_p99,
        "ratio": ratio,
        "target_ratio": RATIO_TARGET,
    });
    write_report("fairness", if full { "full" } else { "short" }, &rows, raw)?;
    Ok(())
}
