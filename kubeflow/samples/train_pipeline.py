"""A sample pipeline: train with provenant, then hand the signed model to the next step.

Compile it to the IR YAML a KFP v2 backend runs (docs/pipelines.md):

    python3 kubeflow/samples/train_pipeline.py train_pipeline.yaml
"""

import sys

from kfp import compiler, dsl

from provenant_kfp import train_model


@dsl.component(base_image="python:3.11-slim")
def announce_model(model: dsl.Input[dsl.Model], digest: str) -> str:
    """The next step of a pipeline: here it prints what it got; a real one would deploy it."""
    attestations = model.metadata.get("attestations", [])
    print(f"model {model.uri} from TrainingRun {model.metadata.get('trainingRun')}")
    for reference in attestations:
        print(f"  attestation {reference}")
    if not model.uri.endswith(f"@{digest}") or not attestations:
        raise ValueError(f"model {model.uri} does not carry digest {digest} and its attestations")
    return model.uri


@dsl.pipeline(
    name="provenant-train",
    description="Train a model as a provenant TrainingRun and pass the signed model on.",
)
def train_pipeline(
    image: str = "ghcr.io/acme/train-bert@sha256:4f1c1a8e8f0a7c1d2f3e4d5c6b7a8f9e0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a",
    output_repository: str = "registry.example.com/models/bert-finetuned",
    # Lists and dicts go through as JSON (a number stays a number in the provenance).
    datasets: list = [{"name": "wiki", "uri": "gs://acme-datasets/wiki/2026-10"}],
    hyperparameters: dict = {"learningRate": 0.0003, "optimizer": "adamw"},
    seed: int = 42,
    accelerator_type: str = "nvidia-a100-80gb",
    namespace: str = "",
) -> dsl.Model:
    train = train_model(
        image=image,
        command=["python", "-m", "train"],
        output_repository=output_repository,
        datasets=datasets,
        hyperparameters=hyperparameters,
        seed=seed,
        accelerator_type=accelerator_type,
        accelerator_count=1,
        namespace=namespace,
        # Names the TrainingRun after this task and run: a retried step waits for its own run.
        pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        pipeline_task_name=dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
        timeout_seconds=6 * 3600,
    )
    announce_model(model=train.outputs["model"], digest=train.outputs["digest"])
    return train.outputs["model"]


if __name__ == "__main__":
    compiler.Compiler().compile(train_pipeline, sys.argv[1] if len(sys.argv) > 1 else "train_pipeline.yaml")
