#!/usr/bin/env bash
# make demo: the main job on embedded defaults — no cluster, no registry. Trains the bundled
# model with `provenant attest` (the same provenance engine as the controller), stores model and
# signed SLSA provenance in an OCI image layout, verifies it, shows that the same seed gives the
# same model digest, that a Rego policy refuses it with its reason, and that tampering is caught.
# It ends with an incident: the dataset is revoked, `provenant lineage` finds the model trained on
# it, `provenant revoke` attaches a signed revocation, and `provenant verify` refuses the model.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${PROVENANT_BIN:-target/debug/provenant}"
OUT="${DEMO_OUT:-demo-out}"
rm -rf "$OUT"
mkdir -p "$OUT"
export COSIGN_PASSWORD="demo-only-password"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "1. A throwaway signing key (cosign format)"
"$BIN" keys generate --output-dir "$OUT/keys"

say "2. Train the bundled logistic regression and attest it (hack/demo/trainingrun.yaml)"
"$BIN" attest -f hack/demo/trainingrun.yaml --key "$OUT/keys/cosign.key" \
  --layout "$OUT/layout" --model-dir "$OUT/model-1" --output-digest "$OUT/digest-1"
DIGEST="$(cat "$OUT/digest-1")"

say "3. Train again with the same seed: the model digest must be the same"
"$BIN" attest -f hack/demo/trainingrun.yaml --key "$OUT/keys/cosign.key" \
  --layout "$OUT/layout-2" --model-dir "$OUT/model-2" --output-digest "$OUT/digest-2" > /dev/null
DIGEST2="$(cat "$OUT/digest-2")"
if [ "$DIGEST" = "$DIGEST2" ]; then
  echo "same seed, same data, same code → same model digest: $DIGEST"
  echo "(the reproducibility evidence SLSA for ML asks for)"
else
  echo "the model digest changed between two runs with the same seed: $DIGEST vs $DIGEST2" >&2
  exit 1
fi

say "4. Verify the model in the OCI layout with the public key"
"$BIN" verify "oci:$OUT/layout@$DIGEST" --key "$OUT/keys/cosign.pub" \
  --require-dataset "$(sha256sum hack/demo/data/churn.csv | awk '{print "sha256:"$1}')" \
  --builder-id https://provenant.dev/attest/v1

say "5. A policy in Rego: no model trained on a dataset whose license is unknown"
# The demo's TrainingRun declares no license for its dataset (spec.datasets[].license), so the
# shipped policy refuses the model and says why; the demo goes on.
POLICY_CODE=0
"$BIN" verify "oci:$OUT/layout@$DIGEST" --key "$OUT/keys/cosign.pub" \
  --policy config/policies/dataset-license.rego || POLICY_CODE=$?
if [ "$POLICY_CODE" -ne 1 ]; then
  echo "expected config/policies/dataset-license.rego to refuse the model (exit 1), got exit $POLICY_CODE" >&2
  exit 1
fi
echo "→ refused by the policy with its reason (exit code 1): declare the dataset's license to pass it"

say "6. A tampered model fails verification"
# Change one weight inside the stored model, in place, as an attacker with write access would.
BLOB="$(python3 - "$OUT/layout" "$DIGEST" <<'PY'
import json, sys
layout, digest = sys.argv[1], sys.argv[2].split(":")[1]
manifest = json.load(open(f"{layout}/blobs/sha256/{digest}"))
layer = next(l for l in manifest["layers"] if l["annotations"]["org.opencontainers.image.title"] == "model.json")
print(f"{layout}/blobs/sha256/{layer['digest'].split(':')[1]}")
PY
)"
chmod u+w "$BLOB"
sed -i 's/"bias": "/"bias": "1/' "$BLOB"
echo "changed the bias in $BLOB"
if "$BIN" verify "oci:$OUT/layout@$DIGEST" --key "$OUT/keys/cosign.pub"; then
  echo "the tampered model verified: that is a bug" >&2
  exit 1
fi
echo "→ refused, as it must be (exit code 1)"

DATASET="$(sha256sum hack/demo/data/churn.csv | awk '{print "sha256:"$1}')"
say "7. Incident: the dataset is withdrawn. Which models were trained on it?"
# The untampered copy from step 3 (same model digest): its attestations verified with the key.
"$BIN" lineage --registry "oci:$OUT/layout-2" --key "$OUT/keys/cosign.pub" --dataset "$DATASET" \
  | tee "$OUT/lineage.txt"
grep -q "@$DIGEST" <(
  "$BIN" lineage --registry "oci:$OUT/layout-2" --key "$OUT/keys/cosign.pub" \
    --dataset "$DATASET" --output json 2>/dev/null
) || { echo "provenant lineage did not list the demo model $DIGEST" >&2; exit 1; }

say "8. Revoke the dataset: a signed revocation attached to every model trained on it"
"$BIN" revoke --dataset "$DATASET" --reason "demo: the churn data was withdrawn" \
  --advisory https://example.com/advisories/churn-demo --key "$OUT/keys/cosign.key" \
  --registry "oci:$OUT/layout-2"

say "9. The revoked model is refused"
REVOKED_CODE=0
"$BIN" verify "oci:$OUT/layout-2@$DIGEST" --key "$OUT/keys/cosign.pub" || REVOKED_CODE=$?
if [ "$REVOKED_CODE" -ne 1 ]; then
  echo "expected provenant verify to refuse the revoked model (exit 1), got exit $REVOKED_CODE" >&2
  exit 1
fi
echo "→ refused: its dataset was revoked (exit code 1)"

say "Done. The layout $OUT/layout is a standard OCI image layout (skopeo inspect oci:$OUT/layout:churn-demo)."
