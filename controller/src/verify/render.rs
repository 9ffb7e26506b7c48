//! The text form of a verdict: what `provenant verify` prints without `--output json`.

use super::{AttestationKind, Verdict};

/// The human form of a verdict.
pub fn render(verdict: &Verdict) -> String {
    let mut out = String::new();
    let line = |out: &mut String, text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    if let (Some(s), true) = (&verdict.summary, verdict.verified) {
        line(
            &mut out,
            format!("Verified: {}@{}", verdict.artifact, verdict.digest),
        );
        for m in &s.models {
            line(&mut out, format!("  model         {m}"));
        }
        line(
            &mut out,
            format!("  builder       {} ({})", s.builder, s.build_type),
        );
        line(&mut out, format!("  run           {}", s.invocation));
        line(
            &mut out,
            format!(
                "  when          {} → {}",
                s.started_on.as_deref().unwrap_or("?"),
                s.finished_on.as_deref().unwrap_or("?")
            ),
        );
        for (name, digest, sources) in &s.datasets {
            line(
                &mut out,
                format!("  dataset       {name} {digest} ({sources})"),
            );
        }
        for image in &s.images {
            line(&mut out, format!("  image         {image}"));
        }
        if let Some(code) = &s.code {
            line(&mut out, format!("  code          {code}"));
        }
        if let Some(base) = &s.base_model {
            line(&mut out, format!("  base model    {base}"));
        }
        if let Some(seed) = &s.seed {
            line(&mut out, format!("  seed          {seed}"));
        }
        if let Some(hp) = &s.hyperparameters {
            line(&mut out, format!("  hyperparams   {hp}"));
        }
        for (worker, acc) in &s.accelerators {
            line(&mut out, format!("  accelerator   {worker}: {acc}"));
        }
        for (worker, metrics) in &s.metrics {
            line(
                &mut out,
                format!("  metrics       {worker}: {metrics} (reported)"),
            );
        }
        if let Some(m) = &verdict.model_signature {
            line(&mut out, format!("  model.sig     {}", m.describe()));
        }
        if verdict.reinstated > 0 {
            line(
                &mut out,
                format!(
                    "  revocations   {} withdrawn (reinstated), none in force",
                    verdict.reinstated
                ),
            );
        }
    } else {
        line(
            &mut out,
            format!("NOT verified: {}@{}", verdict.artifact, verdict.digest),
        );
        for r in &verdict.revoked {
            line(&mut out, format!("  REVOKED: {}", r.description));
        }
        for f in &verdict.content_failures {
            line(&mut out, format!("  - {f}"));
        }
        if verdict.attestations.is_empty() {
            line(
                &mut out,
                "  no attestation found (looked under the .att tag and the OCI referrers)".into(),
            );
        } else if verdict
            .attestations
            .iter()
            .all(|c| c.kind == Some(AttestationKind::Revocation))
        {
            line(
                &mut out,
                "  no provenance found: the only attestations are revocation statements".into(),
            );
        }
    }
    for c in verdict.attestations.iter().filter(|c| !c.verified()) {
        line(
            &mut out,
            format!(
                "  attestation {} ({}) rejected:",
                c.envelope_digest, c.found_at
            ),
        );
        for f in &c.failures {
            line(&mut out, format!("    - {f}"));
        }
    }
    out
}
