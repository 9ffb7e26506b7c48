#!/usr/bin/env python3
"""Generates data/churn.csv, the demo's bundled dataset (committed; rerun only to change it)."""
import random

rng = random.Random(20261122)
rows = ["tenure_years,monthly_charge,support_calls,contract_months,churned"]
for _ in range(400):
    tenure = round(rng.uniform(0, 8), 2)
    charge = round(rng.uniform(0.2, 1.5), 3)
    calls = rng.randint(0, 6)
    contract = rng.choice([1, 12, 24])
    z = -0.6 * tenure + 2.2 * charge + 0.7 * calls - 0.08 * contract - 0.5 + rng.gauss(0, 0.8)
    rows.append(f"{tenure},{charge},{calls},{contract},{1 if z > 0 else 0}")
with open("data/churn.csv", "w") as f:
    f.write("\n".join(rows) + "\n")
