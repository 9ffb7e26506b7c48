//! `provenant-bench-lineage [--short|--full]`: benchmark 6, lineage over 100,000 recorded runs
//! (issue 16; docs/benchmarks.md, "Lineage at scale"). A binary of its own for its counting
//! allocator: the index's heap is measured without slowing the other benchmarks' allocations.
//! It counts only while asked ([`counting`]): a counter shared by the parsing threads made the
//! timed passes 30 % slower (a contended atomic on every allocation), so the heap is measured in
//! a pass of its own, untimed.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

use anyhow::Result;
use clap::Parser;

/// mimalloc, the allocator of the `provenant` binary (controller/src/main.rs), counting the bytes
/// live while asked.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static ON: AtomicBool = AtomicBool::new(false);

fn add(bytes: usize, sign: isize) {
    if ON.load(Ordering::Relaxed) {
        LIVE.fetch_add(sign * bytes as isize, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to mimalloc unchanged; only a counter is kept beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size(), 1);
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(layout.size(), -1);
        // SAFETY: `ptr` came from mimalloc with this layout.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size, 1);
        add(layout.size(), -1);
        // SAFETY: as for `dealloc` and `alloc`.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Start (true) or stop counting; returns the bytes allocated and not freed while counting.
fn counting(on: bool) -> isize {
    ON.store(on, Ordering::SeqCst);
    LIVE.load(Ordering::SeqCst)
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
    provenant_bench::lineage::run(args.full, counting)
}
