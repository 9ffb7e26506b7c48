//! Benchmark 1, the engine: a statement built from a recorded run
//! (`provenance::statement_for_run`), signed (`attest::sign`: the DSSE envelope + one cosign simple
//! signature per subject) and serialized (the persisted `SignedRecord` JSON), beside a bare ECDSA
//! P-256 signature of the same payload bytes with the same key, in the same process, interleaved.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use provenant::api::TrainingRun;
use provenant::attest;
use provenant::config::{ControllerConfig, Placement};
use provenant::provenance::{self, BuilderIdentity};
use provenant::signing::{CosignKey, Signer};
use serde_json::{Value, json};

use crate::table::{Row, median, print_table, write_report};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../controller/tests/fixtures/succeeded-run.yaml"
);
/// Target: engine µs ≤ 1.5 × bare signature µs.
const TARGET: f64 = 1.5;

pub fn load_fixture() -> Result<TrainingRun> {
    let text = std::fs::read_to_string(FIXTURE).with_context(|| format!("reading {FIXTURE}"))?;
    serde_saphyr::from_str(&text).map_err(|e| anyhow!("parsing {FIXTURE}: {e}"))
}

/// The fixture with `n` workers (copies of worker 0 with their own rank, pod and node).
pub fn with_workers(run: &TrainingRun, n: usize) -> Result<TrainingRun> {
    let mut value = serde_json::to_value(run)?;
    let first = value
        .pointer("/status/workers/0")
        .cloned()
        .ok_or_else(|| anyhow!("fixture has no worker"))?;
    let workers: Vec<Value> = (0..n)
        .map(|i| {
            let mut w = first.clone();
            w["rank"] = json!(i);
            w["podName"] = json!(format!("resnet50-finetune-{i}"));
            w["nodeName"] = json!(format!("gpu-node-{i}"));
            w["reportDigest"] = json!(format!("sha256:{:064x}", i + 1));
            w
        })
        .collect();
    value["status"]["workers"] = Value::Array(workers);
    value["spec"]["replicas"] = json!(n);
    Ok(serde_json::from_value(value)?)
}

struct Variant {
    name: String,
    run: TrainingRun,
}

/// One engine op: build, sign, serialize; returns the record's size.
fn engine_op(
    run: &TrainingRun,
    placement: &Placement,
    builder: &BuilderIdentity,
    key: &CosignKey,
) -> Result<usize> {
    let statement = provenance::statement_for_run(run, placement, builder)?;
    let record = attest::sign(&statement, key)?;
    let bytes = serde_json::to_vec(&record)?;
    Ok(bytes.len())
}

/// Runs `op` repeatedly for about `budget`; returns µs per op.
fn time_batch(budget: Duration, mut op: impl FnMut() -> Result<()>) -> Result<f64> {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget || n < 10 {
        op()?;
        n += 1;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / n as f64)
}

pub fn run(full: bool) -> Result<()> {
    let mode = if full { "full" } else { "short" };
    // Rounds of (engine batch, bare batch), interleaved so that both see the same machine noise.
    let (rounds, batch) = if full {
        (15, Duration::from_millis(1000))
    } else {
        (7, Duration::from_millis(300))
    };
    let key = CosignKey::ephemeral()?;
    let fixture = load_fixture()?;
    let placement = ControllerConfig::defaults()
        .placement(fixture.spec.accelerator.as_ref())
        .map_err(|e| anyhow!("placement of the fixture: {e}"))?;
    let builder = BuilderIdentity {
        id: provenance::DEFAULT_BUILDER_ID.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let variants = [
        Variant {
            name: "2 workers (fixture)".into(),
            run: fixture.clone(),
        },
        Variant {
            name: "64 workers".into(),
            run: with_workers(&fixture, 64)?,
        },
    ];

    let mut rows = Vec::new();
    let mut raw = Vec::new();
    for v in &variants {
        let statement = provenance::statement_for_run(&v.run, &placement, &builder)?;
        let payload = statement.to_bytes();
        let pae = provenant::signing::pae(provenant::signing::IN_TOTO_PAYLOAD_TYPE, &payload);
        let subjects = statement.subject.len();
        let record_bytes = engine_op(&v.run, &placement, &builder, &key)?;
        // Signatures one engine op makes: the DSSE envelope + one simple signature per subject.
        let signatures = 1 + subjects;

        // Warm-up.
        time_batch(Duration::from_millis(100), || {
            engine_op(&v.run, &placement, &builder, &key).map(|n| {
                black_box(n);
            })
        })?;
        let mut engine_us = Vec::new();
        let mut bare_us = Vec::new();
        // Phases of the engine op, timed separately (where the time goes).
        let mut build_us = Vec::new();
        let mut to_bytes_us = Vec::new();
        let mut sign_us = Vec::new();
        let mut serialize_us = Vec::new();
        for _ in 0..rounds {
            engine_us.push(time_batch(batch, || {
                engine_op(&v.run, &placement, &builder, &key).map(|n| {
                    black_box(n);
                })
            })?);
            bare_us.push(time_batch(batch, || {
                black_box(key.sign(black_box(&payload))?);
                Ok(())
            })?);
        }
        let record = attest::sign(&statement, &key)?;
        for _ in 0..3 {
            build_us.push(time_batch(batch / 3, || {
                black_box(provenance::statement_for_run(&v.run, &placement, &builder)?);
                Ok(())
            })?);
            to_bytes_us.push(time_batch(batch / 3, || {
                black_box(statement.to_bytes());
                Ok(())
            })?);
            sign_us.push(time_batch(batch / 3, || {
                black_box(attest::sign(&statement, &key)?);
                Ok(())
            })?);
            serialize_us.push(time_batch(batch / 3, || {
                black_box(serde_json::to_vec(&record)?);
                Ok(())
            })?);
        }
        let bare_pae_us = time_batch(batch, || {
            black_box(key.sign(black_box(&pae))?);
            Ok(())
        })?;

        let e = median(&engine_us);
        let b = median(&bare_us);
        let ratio = e / b;
        let per_sig = e / (signatures as f64 * b);
        rows.push(Row::check(
            format!("engine µs/op, {}", v.name),
            format!("{e:.1} µs ({:.0} ops/s)", 1e6 / e),
            format!("{b:.1} µs bare sign ({:.0}/s)", 1e6 / b),
            ratio,
            format!("≤ {TARGET}×"),
            ratio <= TARGET,
        ));
        rows.push(Row::check(
            format!("engine µs per signature, {} ({signatures} sigs/op)", v.name),
            format!("{:.1} µs", e / signatures as f64),
            format!("{b:.1} µs"),
            per_sig,
            format!("≤ {TARGET}×"),
            per_sig <= TARGET,
        ));
        rows.push(Row::info(
            format!("  breakdown, {}", v.name),
            format!(
                "statement_for_run {:.1} µs, to_bytes {:.1} µs, attest::sign {:.1} µs (incl. to_bytes + {signatures} signs), record JSON {:.1} µs, payload {} B, record {} B",
                median(&build_us),
                median(&to_bytes_us),
                median(&sign_us),
                median(&serialize_us),
                payload.len(),
                record_bytes
            ),
        ));
        raw.push(json!({
            "variant": v.name,
            "subjects": subjects,
            "signatures_per_op": signatures,
            "payload_bytes": payload.len(),
            "record_bytes": record_bytes,
            "engine_us_rounds": engine_us,
            "bare_sign_us_rounds": bare_us,
            "engine_us_median": e,
            "bare_sign_us_median": b,
            "engine_ops_per_s": 1e6 / e,
            "bare_signs_per_s": 1e6 / b,
            "ratio": ratio,
            "ratio_per_signature": per_sig,
            "statement_for_run_us": build_us,
            "statement_to_bytes_us": to_bytes_us,
            "attest_sign_us": sign_us,
            "record_serialize_us": serialize_us,
            "bare_sign_of_pae_us": bare_pae_us,
            "target_ratio": TARGET,
            "met": ratio <= TARGET,
            "met_per_signature": per_sig <= TARGET,
        }));
    }
    print_table(&format!("1. Engine ({mode})"), &rows);
    write_report(
        "engine",
        mode,
        &rows,
        json!({ "batch_ms": batch.as_millis() as u64, "rounds": rounds, "variants": raw }),
    )?;
    Ok(())
}
