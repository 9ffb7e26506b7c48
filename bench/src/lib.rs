//! Benchmarks of provenant (issue 7). `provenant-bench` (src/main.rs) runs 1 (engine), 2 (attach)
//! and 5 (hashing); other binaries reuse [`table`] for their output (table + `target/bench/*.json`).
pub mod attach;
pub mod engine;
pub mod hashing;
pub mod table;
