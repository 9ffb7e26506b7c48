#!/usr/bin/env python3
"""The demo's training workload: a seeded logistic regression on a small CSV, pure Python.

Deterministic for a given seed and hyperparameters: the same inputs give byte-identical model
files, so the model's digest is the same on every run (the reproducibility evidence `make demo`
prints). Reads what provenant passes to every workload:

  PROVENANT_SEED             the run's seed
  PROVENANT_HYPERPARAMETERS  JSON: learningRate, epochs, l2
  PROVENANT_OUTPUT_DIR       where to write the model (provenant attest packages this directory)
  PROVENANT_REPORT_PATH      where to write the workload report (metrics)

Usage: train.py DATASET.csv
"""
import csv
import json
import math
import os
import random
import sys


def load(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    features = [[float(v) for v in row[:-1]] for row in body]
    labels = [int(row[-1]) for row in body]
    return header[:-1], features, labels


def sigmoid(z):
    if z < -30:
        return 0.0
    if z > 30:
        return 1.0
    return 1.0 / (1.0 + math.exp(-z))


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    seed = int(os.environ["PROVENANT_SEED"])
    hp = json.loads(os.environ.get("PROVENANT_HYPERPARAMETERS", "{}"))
    lr = float(hp.get("learningRate", 0.1))
    epochs = int(hp.get("epochs", 30))
    l2 = float(hp.get("l2", 0.001))
    out_dir = os.environ["PROVENANT_OUTPUT_DIR"]

    names, x, y = load(sys.argv[1])
    rng = random.Random(seed)
    order = list(range(len(x)))
    rng.shuffle(order)
    split = int(len(order) * 0.8)
    train, test = order[:split], order[split:]
    weights = [rng.uniform(-0.01, 0.01) for _ in names]
    bias = 0.0

    for _ in range(epochs):
        rng.shuffle(train)
        for i in train:
            p = sigmoid(sum(w * v for w, v in zip(weights, x[i])) + bias)
            g = p - y[i]
            weights = [w - lr * (g * v + l2 * w) for w, v in zip(weights, x[i])]
            bias -= lr * g

    def predict(i):
        return sigmoid(sum(w * v for w, v in zip(weights, x[i])) + bias)

    accuracy = sum((predict(i) >= 0.5) == (y[i] == 1) for i in test) / len(test)
    loss = -sum(
        math.log(max(1e-12, predict(i))) if y[i] else math.log(max(1e-12, 1 - predict(i))) for i in test
    ) / len(test)

    os.makedirs(out_dir, exist_ok=True)
    # repr() of floats is exact and stable: identical training gives identical bytes.
    model = {"type": "logistic-regression", "features": names, "weights": [repr(w) for w in weights], "bias": repr(bias)}
    with open(os.path.join(out_dir, "model.json"), "w") as f:
        json.dump(model, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(out_dir, "README.txt"), "w") as f:
        f.write("Logistic regression trained by the provenant demo (hack/demo/train.py).\n")

    report = {"metrics": {"accuracy": round(accuracy, 6), "loss": round(loss, 6)}}
    report_path = os.environ.get("PROVENANT_REPORT_PATH")
    if report_path:
        with open(report_path, "w") as f:
            json.dump(report, f)
    print(f"trained: accuracy {accuracy:.3f}, loss {loss:.4f} (seed {seed}, lr {lr}, epochs {epochs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
