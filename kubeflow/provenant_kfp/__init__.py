"""provenant for Kubeflow Pipelines v2: the `train_model` component (docs/pipelines.md)."""

from provenant_kfp.component import train_model

__all__ = ["train_model"]
