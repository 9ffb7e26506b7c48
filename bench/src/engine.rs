//! Benchmark 1, the engine: a statement built from a recorded run
//! (`provenance::statement_for_run`), signed (`engine::sign`: the DSSE envelope + one cosign simple
//! signature per subject) and serialized (the `SignedRecord` as compact JSON,
//! `SignedRecord::to_json`; the ConfigMap's `record.json` is the same record pretty-printed).
//!
//! The targets are absolute, what a user would feel: at most 1 ms for a 64-worker run and 10 ms
//! for a 1,024-worker run (a run waits tens of milliseconds for the registry anyway). Reported
//! beside them, for information, two baselines measured in the same process with the same key,
//! interleaved with the engine:
//!
//! - **same payloads**: bare ECDSA P-256 signatures (`Signer::sign`) of exactly what one engine op
//!   signs, the DSSE PAE of the statement and one cosign simple-signing payload per subject;
//! - **literal**: one bare signature of the statement payload bytes.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use provenant::api::TrainingRun;
use provenant::config::ControllerConfig;
use provenant::engine;
use provenant::execute::placement::{Placement, placement};
use provenant::provenance::{self, BuilderIdentity};
use provenant::signing::{CosignKey, IN_TOTO_PAYLOAD_TYPE, Signer, pae, simple_signing};
use serde_json::{Value, json};

use crate::table::{Row, median, print_table, write_report};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../controller/tests/fixtures/succeeded-run.yaml"
);

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
    /// The most one engine op may take, in µs (None: for information).
    target_us: Option<f64>,
}

/// One engine op: build, sign, serialize; returns the record's size.
fn engine_op(
    run: &TrainingRun,
    placement: &Placement,
    builder: &BuilderIdentity,
    key: &CosignKey,
) -> Result<usize> {
    let statement = provenance::statement_for_run(run, placement, builder)?;
    let record = engine::sign(&statement, key)?;
    let bytes = record.to_json()?;
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
    // Rounds of (engine batch, same-payloads batch, literal batch), interleaved so that all three
    // see the same machine noise.
    let (rounds, batch) = if full {
        (15, Duration::from_millis(1000))
    } else {
        (7, Duration::from_millis(300))
    };
    let key = CosignKey::ephemeral()?;
    let fixture = load_fixture()?;
    let placement = placement(
        &ControllerConfig::defaults(),
        fixture.spec.accelerator.as_ref(),
    )
    .map_err(|e| anyhow!("placement of the fixture: {e}"))?;
    let builder = BuilderIdentity {
        id: provenance::DEFAULT_BUILDER_ID.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let variants = [
        Variant {
            name: "2 workers (fixture)".into(),
            run: fixture.clone(),
            target_us: None,
        },
        Variant {
            name: "64 workers".into(),
            run: with_workers(&fixture, 64)?,
            target_us: Some(1_000.0),
        },
        Variant {
            name: "1,024 workers".into(),
            run: with_workers(&fixture, 1024)?,
            target_us: Some(10_000.0),
        },
    ];

    let mut rows = Vec::new();
    let mut raw = Vec::new();
    for v in &variants {
        let statement = provenance::statement_for_run(&v.run, &placement, &builder)?;
        let payload = statement.to_bytes()?;
        // What one op signs: the DSSE PAE of the payload, and one simple-signing payload per
        // subject (the `.sig` over the model manifest).
        let pae = pae(IN_TOTO_PAYLOAD_TYPE, &payload);
        let simple: Vec<Vec<u8>> = statement
            .subject
            .iter()
            .filter_map(|s| Some((s.name.as_ref()?, s.digest.get("sha256")?)))
            .map(|(repository, hex)| simple_signing::payload(repository, &format!("sha256:{hex}")))
            .collect();
        let signatures = 1 + simple.len();
        let record_bytes = engine_op(&v.run, &placement, &builder, &key)?;
        let same_payloads = || -> Result<()> {
            black_box(key.sign(black_box(&pae))?);
            for p in &simple {
                black_box(key.sign(black_box(p))?);
            }
            Ok(())
        };
        let literal = || -> Result<()> {
            black_box(key.sign(black_box(&payload))?);
            Ok(())
        };
        let engine = || {
            engine_op(&v.run, &placement, &builder, &key).map(|n| {
                black_box(n);
            })
        };

        // Warm-up.
        time_batch(Duration::from_millis(100), engine)?;
        time_batch(Duration::from_millis(50), same_payloads)?;
        let mut engine_us = Vec::new();
        let mut same_us = Vec::new();
        let mut literal_us = Vec::new();
        for _ in 0..rounds {
            engine_us.push(time_batch(batch, engine)?);
            same_us.push(time_batch(batch, same_payloads)?);
            literal_us.push(time_batch(batch, literal)?);
        }

        // Phases of the engine op, timed separately (where the time goes).
        let record = engine::sign(&statement, &key)?;
        let mut build_us = Vec::new();
        let mut to_bytes_us = Vec::new();
        let mut sign_us = Vec::new();
        let mut serialize_us = Vec::new();
        for _ in 0..3 {
            build_us.push(time_batch(batch / 3, || {
                black_box(provenance::statement_for_run(&v.run, &placement, &builder)?);
                Ok(())
            })?);
            to_bytes_us.push(time_batch(batch / 3, || {
                black_box(statement.to_bytes()?);
                Ok(())
            })?);
            sign_us.push(time_batch(batch / 3, || {
                black_box(engine::sign(&statement, &key)?);
                Ok(())
            })?);
            serialize_us.push(time_batch(batch / 3, || {
                black_box(record.to_json()?);
                Ok(())
            })?);
        }

        let e = median(&engine_us);
        let s = median(&same_us);
        let l = median(&literal_us);
        let ratio = e / s;
        let literal_ratio = e / l;
        let baseline = format!(
            "{s:.1} µs: bare signs of the same payloads (PAE + {} simple-signing)",
            simple.len()
        );
        let figure = format!("{e:.1} µs ({:.0} ops/s)", 1e6 / e);
        let metric = format!("engine µs/op, {}", v.name);
        rows.push(match v.target_us {
            Some(t) => Row::check(
                metric,
                figure,
                baseline,
                ratio,
                format!("≤ {} ms", t / 1e3),
                e <= t,
            ),
            None => Row {
                metric,
                figure,
                baseline,
                ratio: Some(ratio),
                target: "(for information)".into(),
                met: None,
            },
        });
        rows.push(Row {
            metric: format!("  vs 1 bare sign (literal), {}", v.name),
            figure: format!("{e:.1} µs ({signatures} signs/op)"),
            baseline: format!("{l:.1} µs: 1 bare sign of the statement payload"),
            ratio: Some(literal_ratio),
            target: "(not the target: an op signs 1 + subjects times)".into(),
            met: None,
        });
        rows.push(Row::info(
            format!("  breakdown, {}", v.name),
            format!(
                "statement_for_run {:.1} µs, to_bytes {:.1} µs, engine::sign {:.1} µs (to_bytes + PAE + {signatures} signs + base64 + envelope JSON), record JSON {:.1} µs; engine − same payloads {:.1} µs; payload {} B, record {} B",
                median(&build_us),
                median(&to_bytes_us),
                median(&sign_us),
                median(&serialize_us),
                e - s,
                payload.len(),
                record_bytes
            ),
        ));
        raw.push(json!({
            "variant": v.name,
            "subjects": simple.len(),
            "signatures_per_op": signatures,
            "payload_bytes": payload.len(),
            "pae_bytes": pae.len(),
            "record_bytes": record_bytes,
            "engine_us_rounds": engine_us,
            "same_payloads_us_rounds": same_us,
            "bare_sign_us_rounds": literal_us,
            "engine_us_median": e,
            "same_payloads_us_median": s,
            "bare_sign_us_median": l,
            "engine_ops_per_s": 1e6 / e,
            "overhead_us": e - s,
            "ratio_same_payloads": ratio,
            "ratio_literal": literal_ratio,
            "statement_for_run_us": build_us,
            "statement_to_bytes_us": to_bytes_us,
            "engine_sign_us": sign_us,
            "record_serialize_us": serialize_us,
            "target_us": v.target_us,
            "met": v.target_us.map(|t| e <= t),
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
