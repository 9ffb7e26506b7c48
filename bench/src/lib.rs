//! Benchmarks of provenant (issue 7). `provenant-bench` (src/main.rs) runs 1 (engine), 2 (attach)
//! and 5 (hashing); `provenant-bench-lineage` runs 6 (lineage at scale, issue 16); other binaries reuse [`table`] for their output (table + `target/bench/*.json`).
pub mod attach;
pub mod engine;
pub mod hashing;
pub mod lineage;
pub mod table;
