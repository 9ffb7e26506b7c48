//! `provenant-bench-lineage [--short|--full]`: benchmark 6, lineage over 100,000 recorded runs
//! (issue 16; docs/benchmarks.md, "Lineage at scale"). A binary of its own for its counting
//! allocator: the index's heap is measured without slowing the other benchmarks' allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Result;
use clap::Parser;

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only a counter is kept beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as for `dealloc` and `alloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

#[derive(Parser)]
#[command(
    name = "provenant-bench-lineage",
    about = "provenant benchmark 6: lineage over 100,000 recorded runs"
)]
struct Args {
    /// Short mode (the default): 3 passes, about 30 s in all.
    #[arg(long, conflicts_with = "full")]
    short: bool,
    /// Full mode: 7 passes.
    #[arg(long)]
    full: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    provenant_bench::lineage::run(args.full, live)
}
