//! Benchmark 6, lineage at scale (issue 16, point 5): 100,000 recorded runs, as the API server
//! returns their record ConfigMaps' metadata (pages of 1,000 `PartialObjectMetadata`, each with
//! the `provenant.dev/lineage` annotation the controller writes), then
//!
//! - (a) `provenant lineage`: parse the pages → entries (`lineage::records::from_annotation`) →
//!   `LineageIndex` → one answer of each kind (dataset by digest and by name, image, base model
//!   descendants, commit, a model's upstream); target < 1 s for all of it;
//! - (b) the controller finding the affected models of a revocation: the same entries → index
//!   → `find(.., transitive)` for the most used dataset (the worst case) and an image; target
//!   < 5 s.
//!
//! The runs are realistic rather than uniform: datasets and images shared with a skewed
//! popularity (the most used dataset trains about one run in eight), 40 % of the runs fine-tunes
//! of an earlier run's model (chains), one deliberate chain of 50 fine-tunes, 50 namespaces.
//! Each entry starts from the lineage of a real signed statement (the fixture run) and keeps its
//! shape. Memory: the live heap of the entries and index (counted by the binary's allocator)
//! and the process's peak RSS.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, ensure};
use provenant::config::ControllerConfig;
use provenant::engine;
use provenant::execute::placement::placement;
use provenant::labels;
use provenant::lineage::{Fact, Kind, LineageEntry, LineageIndex, ModelRef, Query, records};
use provenant::provenance::{self, BuilderIdentity};
use provenant::signing::CosignKey;
use serde_json::{Value, json};

use crate::engine::load_fixture;
use crate::table::{Row, median, print_table, write_report};

pub const RUNS: usize = 100_000;
const PAGE: usize = 1_000;
const DATASETS: u64 = 500;
const IMAGES: u64 = 40;
const NAMESPACES: usize = 50;
/// The deliberate chain of fine-tunes: runs CHAIN_START..CHAIN_START + CHAIN_LEN.
const CHAIN_START: usize = 1_000;
const CHAIN_LEN: usize = 50;

/// The binary's counting allocator: start (true) or stop counting; returns the bytes allocated
/// and not freed while it counted.
pub type HeapProbe = fn(bool) -> isize;

/// splitmix64: a fixed, dependency-free stream of numbers (the same runs every time).
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// In 0..n, skewed towards 0 (u³): a few items are used by many runs.
    fn popular(&mut self, n: u64) -> u64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((u * u * u) * n as f64) as u64
    }
}

fn digest(kind: u64, i: u64) -> String {
    let mut m = Mix(kind.wrapping_mul(0x1000_0000_01b3) ^ i);
    format!(
        "sha256:{:016x}{:016x}{:016x}{:016x}",
        m.next(),
        m.next(),
        m.next(),
        m.next()
    )
}

fn dataset(i: u64) -> (String, String) {
    (format!("corpus-{i}"), digest(1, i))
}

fn image_digest(i: u64) -> String {
    digest(2, i)
}

fn model_of(run: usize) -> ModelRef {
    ModelRef {
        repository: format!(
            "registry.example.com/models/team-{}/m-{run}",
            run % NAMESPACES
        ),
        digest: digest(3, run as u64),
    }
}

/// The lineage entry of the fixture run's signed statement, as the controller annotates it.
fn template() -> Result<LineageEntry> {
    let run = load_fixture()?;
    let placement = placement(&ControllerConfig::defaults(), run.spec.accelerator.as_ref())
        .map_err(|e| anyhow!("placement of the fixture: {e}"))?;
    let builder = BuilderIdentity::controller(provenance::DEFAULT_BUILDER_ID, None);
    let statement = provenance::statement_for_run(&run, &placement, &builder)?;
    let record = engine::sign(&statement, &CosignKey::ephemeral()?)?;
    let text = records::annotation(&record.envelope)
        .ok_or_else(|| anyhow!("the fixture's record has no lineage annotation"))?;
    Ok(serde_json::from_str(&text)?)
}

/// Run `i`'s entry: the template's facts with this run's datasets, image, commit, base model.
fn entry(template: &LineageEntry, i: usize, mix: &mut Mix) -> LineageEntry {
    let mut e = template.clone();
    e.run.namespace = format!("team-{}", i % NAMESPACES);
    e.run.invocation_id = format!("{:08x}-0000-4000-8000-{:012x}", i, mix.next() >> 16);
    e.envelope_digest = Some(digest(4, i as u64));
    e.models = vec![model_of(i)];
    let shape = |kind: Kind| template.materials.iter().find(|f| f.kind == kind).cloned();
    let mut materials = Vec::new();
    if let Some(ds) = shape(Kind::Dataset) {
        for n in 0..2u64 {
            let (name, digest) = dataset((mix.popular(DATASETS) + n * 7) % DATASETS);
            materials.push(Fact {
                name: name.clone(),
                uri: Some(format!("s3://datasets/{name}")),
                digest: Some(digest),
                ..ds.clone()
            });
        }
    }
    if let Some(image) = shape(Kind::Image) {
        let k = mix.popular(IMAGES);
        materials.push(Fact {
            name: format!("registry.example.com/train/pytorch:2.{k}"),
            digest: Some(image_digest(k)),
            ..image
        });
    }
    let code = shape(Kind::Code).unwrap_or(Fact {
        kind: Kind::Code,
        name: String::new(),
        uri: Some("https://git.example.com/ml/train".into()),
        digest: None,
        sources: vec!["declared".into()],
    });
    materials.push(Fact {
        digest: Some(format!("{:040x}", (i / 5) as u128 * 0x9e37_79b9)),
        ..code
    });
    let base = if (CHAIN_START + 1..CHAIN_START + CHAIN_LEN).contains(&i) {
        Some(i - 1)
    } else if i > 2_000 && mix.next() % 10 < 4 {
        Some(i - 1 - (mix.next() % 2_000) as usize)
    } else {
        None
    };
    if let Some(b) = base {
        let m = model_of(b);
        materials.push(Fact {
            kind: Kind::BaseModel,
            name: String::new(),
            uri: Some(m.reference()),
            digest: Some(m.digest),
            sources: vec!["declared".into()],
        });
    }
    e.materials = materials;
    e
}

/// The record ConfigMaps' metadata as the API server lists it: pages of [`PAGE`] items.
fn pages(template: &LineageEntry) -> Result<Vec<Vec<u8>>> {
    let mut mix = Mix(16);
    let mut pages = Vec::new();
    for start in (0..RUNS).step_by(PAGE) {
        let items: Vec<Value> = (start..(start + PAGE).min(RUNS))
            .map(|i| {
                let e = entry(template, i, &mut mix);
                let annotation = serde_json::to_string(&e)?;
                Ok(json!({
                    "apiVersion": "meta.k8s.io/v1",
                    "kind": "PartialObjectMetadata",
                    "metadata": {
                        "name": format!("provenance-{}", e.run.invocation_id),
                        "namespace": "provenant-system",
                        "uid": format!("{:08x}-1111-4000-8000-000000000000", i),
                        "resourceVersion": (1_000 + i).to_string(),
                        "creationTimestamp": "2026-11-20T10:00:00Z",
                        "labels": {
                            labels::COMPONENT: "provenance",
                            labels::RUN: format!("run-{i}"),
                            labels::RUN_NAMESPACE: e.run.namespace,
                        },
                        "annotations": {records::ANNOTATION: annotation},
                    },
                }))
            })
            .collect::<Result<_>>()?;
        pages.push(serde_json::to_vec(&json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadataList",
            "metadata": {"resourceVersion": "200000", "continue": if start + PAGE < RUNS { "next" } else { "" }},
            "items": items,
        }))?);
    }
    Ok(pages)
}

/// What `record::lineage_entries` does with the pages: each parsed by `lineage::records::page`
/// (only the fields lineage reads), the pages in parallel on as many threads as the machine has
/// cores, as the command parses each page on the blocking pool while it fetches the next.
fn entries(pages: &[Vec<u8>]) -> Result<Vec<LineageEntry>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = pages.len().div_ceil(threads).max(1);
    let parsed: Vec<Result<Vec<LineageEntry>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = pages
            .chunks(chunk)
            .map(|chunk| {
                scope.spawn(move || {
                    let mut out = Vec::new();
                    for body in chunk {
                        let page = records::page(body).map_err(|e| anyhow!(e))?;
                        ensure!(
                            page.unreadable.is_empty() && page.unannotated.is_empty(),
                            "records without a readable annotation"
                        );
                        out.extend(page.entries);
                    }
                    Ok(out)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(anyhow!("a parsing thread panicked")))
            })
            .collect()
    });
    let mut out = Vec::with_capacity(RUNS);
    for part in parsed {
        out.extend(part.context("a page of record metadata")?);
    }
    Ok(out)
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One pass of (a) and (b); times in ms and the answers' sizes.
fn pass(pages: &[Vec<u8>]) -> Result<BTreeMap<&'static str, f64>> {
    let mut t = BTreeMap::new();
    let start = Instant::now();
    let listed = entries(pages)?;
    t.insert("parse+entries", ms(start.elapsed()));
    let s = Instant::now();
    let index = LineageIndex::new(listed);
    t.insert("index", ms(s.elapsed()));
    ensure!(
        index.len() == RUNS,
        "indexed {} of {RUNS} runs",
        index.len()
    );

    let (popular_name, popular) = dataset(0);
    let chain_root = model_of(CHAIN_START).digest;
    let chain_tip = model_of(CHAIN_START + CHAIN_LEN - 1).digest;
    // Each answer timed on its own: one `provenant lineage` call asks one question.
    let mut answers = Vec::new();
    let mut timed = |name: &'static str, t: &mut BTreeMap<&'static str, f64>, since: Instant| {
        let took = ms(since.elapsed());
        t.insert(name, took);
        answers.push(took);
    };
    let s = Instant::now();
    let by_digest = index.find(&Query::Dataset(popular.clone()), true);
    timed("answer_dataset", &mut t, s);
    let s = Instant::now();
    let by_name = index.find(&Query::Dataset(popular_name), false);
    timed("answer_dataset_name_direct", &mut t, s);
    let s = Instant::now();
    let image = index.find(&Query::Image(image_digest(0)), true);
    timed("answer_image", &mut t, s);
    let s = Instant::now();
    let descendants = index.descendants(&chain_root);
    timed("answer_descendants", &mut t, s);
    let s = Instant::now();
    let code = index.find(&Query::Code(format!("{:040x}", 0)), true);
    timed("answer_code", &mut t, s);
    let s = Instant::now();
    let upstream = index.upstream(&chain_tip);
    timed("answer_upstream", &mut t, s);
    let slowest = answers.iter().copied().fold(0.0, f64::max);
    t.insert("queries", answers.iter().sum());
    t.insert("slowest_answer", slowest);
    t.insert(
        "lineage_one_question",
        t["parse+entries"] + t["index"] + slowest,
    );
    t.insert("lineage_total", ms(start.elapsed()));
    ensure!(
        descendants.len() >= CHAIN_LEN - 1,
        "the chain of fine-tunes"
    );
    let mut depth = 0;
    let mut up = upstream.as_ref();
    while let Some(u) = up {
        depth += 1;
        up = u.base.as_deref();
    }
    ensure!(
        depth >= CHAIN_LEN,
        "upstream of the chain's tip: depth {depth}"
    );
    for (name, n) in [
        ("hits_dataset", by_digest.len()),
        ("hits_dataset_direct", by_name.len()),
        ("hits_image", image.len()),
        ("hits_descendants", descendants.len()),
        ("hits_code", code.len()),
        ("upstream_depth", depth),
    ] {
        t.insert(name, n as f64);
    }

    // (b) The controller on a MaterialRevocation: from the listed pages to the affected models.
    let start = Instant::now();
    let index = LineageIndex::new(entries(pages)?);
    let affected = index.find(&Query::Dataset(popular), true);
    t.insert("revocation_dataset", ms(start.elapsed()));
    t.insert("revocation_dataset_models", affected.len() as f64);
    let s = Instant::now();
    let affected = index.find(&Query::Image(image_digest(0)), true);
    t.insert("revocation_image_find", ms(s.elapsed()));
    t.insert("revocation_image_models", affected.len() as f64);
    Ok(t)
}

/// The live heap of the entries and their index (MiB), in a pass of its own, untimed.
fn heap_mib(pages: &[Vec<u8>], heap: HeapProbe) -> Result<f64> {
    let before = heap(true);
    let index = LineageIndex::new(entries(pages)?);
    let after = heap(false);
    ensure!(
        index.len() == RUNS,
        "indexed {} of {RUNS} runs",
        index.len()
    );
    Ok((after - before) as f64 / (1 << 20) as f64)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

pub fn run(full: bool, heap: HeapProbe) -> Result<()> {
    let mode = if full { "full" } else { "short" };
    let rounds = if full { 7 } else { 3 };
    let s = Instant::now();
    let pages = pages(&template()?)?;
    let body_mib = pages.iter().map(Vec::len).sum::<usize>() as f64 / (1 << 20) as f64;
    println!(
        "lineage: {RUNS} records, {} pages, {body_mib:.0} MiB of metadata, generated in {:.1} s",
        pages.len(),
        s.elapsed().as_secs_f64()
    );
    let passes: Vec<BTreeMap<&str, f64>> =
        (0..rounds).map(|_| pass(&pages)).collect::<Result<_>>()?;
    let heap = heap_mib(&pages, heap)?;
    let med = |k: &str| median(&passes.iter().map(|p| p[k]).collect::<Vec<_>>());
    let first = &passes[0];
    let total = med("lineage_one_question");
    let revoke = med("revocation_dataset");
    let rows = vec![
        Row::check(
            format!("lineage over {RUNS} runs: parse → index → one answer, the slowest (ms)"),
            format!("{total:.0}"),
            "1000",
            total / 1000.0,
            "< 1 s",
            total < 1000.0,
        ),
        Row::info(
            "  parse + entries (ms)",
            format!("{:.0}", med("parse+entries")),
        ),
        Row::info("  index (ms)", format!("{:.0}", med("index"))),
        Row::info(
            "  answers (ms): dataset / by name / image / descendants / code / upstream",
            format!(
                "{:.0} / {:.1} / {:.0} / {:.1} / {:.1} / {:.1}",
                med("answer_dataset"),
                med("answer_dataset_name_direct"),
                med("answer_image"),
                med("answer_descendants"),
                med("answer_code"),
                med("answer_upstream")
            ),
        ),
        Row::info(
            "  parse → index → all 6 answers (ms)",
            format!("{:.0}", med("lineage_total")),
        ),
        Row::check(
            format!("revocation: affected models of the most used dataset among {RUNS} runs (ms)"),
            format!("{revoke:.0}"),
            "5000",
            revoke / 5000.0,
            "< 5 s",
            revoke < 5000.0,
        ),
        Row::info(
            "  affected models (dataset, transitive)",
            format!("{}", first["revocation_dataset_models"]),
        ),
        Row::info(
            "  image revocation: find only (ms) / models",
            format!(
                "{:.1} / {}",
                med("revocation_image_find"),
                first["revocation_image_models"]
            ),
        ),
        Row::info("entries + index, live heap (MiB)", format!("{heap:.0}")),
        Row::info(
            "peak RSS of the benchmark (MiB; includes the listed bodies)",
            format!("{:.0} (bodies {body_mib:.0})", peak_rss_mib()),
        ),
    ];
    print_table(&format!("6. Lineage at scale ({mode})"), &rows);
    write_report(
        "lineage",
        mode,
        &rows,
        json!({
            "runs": RUNS,
            "page_size": PAGE,
            "metadata_mib": body_mib,
            "peak_rss_mib": peak_rss_mib(),
            "heap_mib": heap,
            "passes": passes,
        }),
    )?;
    Ok(())
}
