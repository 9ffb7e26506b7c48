//! `provenant-bench [--short|--full] [engine] [attach] [hashing]`: benchmarks 1, 2 and 5 of issue 7.
//! With no benchmark named, runs all three. See docs/benchmarks.md.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use provenant_bench::{attach, engine, hashing};

#[derive(Parser)]
#[command(
    name = "provenant-bench",
    about = "provenant benchmarks: engine, attach, hashing"
)]
struct Args {
    /// Short mode (the default): engine ~10 s, attach ~30 s, hashing ~90 s (1 GiB).
    #[arg(long, conflicts_with = "full")]
    short: bool,
    /// Full mode: more rounds, more attestations, a 4 GiB tree.
    #[arg(long)]
    full: bool,
    /// Which benchmarks: engine, attach, hashing (default: all); `hash-one <path>` is internal
    /// (peak RSS of hashing one path).
    #[arg(value_name = "BENCH")]
    benches: Vec<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.benches.first().map(String::as_str) == Some("hash-one") {
        let path = args
            .benches
            .get(1)
            .ok_or_else(|| anyhow::anyhow!("hash-one needs a path"))?;
        return hashing::hash_one(&PathBuf::from(path));
    }
    let all = args.benches.is_empty();
    let wants = |name: &str| all || args.benches.iter().any(|b| b == name);
    for b in &args.benches {
        if !["engine", "attach", "hashing"].contains(&b.as_str()) {
            anyhow::bail!("unknown benchmark {b:?} (engine, attach, hashing)");
        }
    }
    let full = args.full;
    if wants("engine") {
        engine::run(full)?;
    }
    if wants("attach") {
        attach::run(full)?;
    }
    if wants("hashing") {
        hashing::run(full)?;
    }
    Ok(())
}
