"""Runs the KFP component's function (kubeflow/provenant_kfp) as a pipeline step would, against the
cluster of $KUBECONFIG: `run_kfp_component.py '<JSON keyword arguments>'`. Prints one JSON object:
the outputs, the model artifact's uri and metadata, and the error (type and text) if it failed;
exits 1 on failure. Used by test/scenarios/pipelines/kfp.rs.
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "kubeflow"))

from kfp import dsl  # noqa: E402

from provenant_kfp import train_model  # noqa: E402


def main():
    kwargs = json.loads(sys.argv[1])
    model = dsl.Model(name="model", uri="", metadata={})
    result = {"outputs": None, "error": None}
    try:
        outputs = train_model.python_func(model=model, **kwargs)
        result["outputs"] = outputs._asdict()
    except Exception as e:  # the test asserts on the type and the text
        result["error"] = {"type": type(e).__name__, "message": str(e)}
    result["uri"] = model.uri
    result["metadata"] = model.metadata
    print(json.dumps(result))
    sys.exit(1 if result["error"] else 0)


if __name__ == "__main__":
    main()
