"""The `train_model` KFP v2 component: run a provenant TrainingRun, return its signed model.

A lightweight component: KFP ships only the function's source to the step's container, so every
import and helper lives inside the function. Call it directly with `train_model.python_func(...)`
and a `dsl.Model` to run it outside a pipeline (the tests do).
"""

from typing import NamedTuple

from kfp import dsl

# The step's image; `kubernetes` is installed on top (KFP installs `kfp` itself).
BASE_IMAGE = "python:3.11-slim"
KUBERNETES_CLIENT = "kubernetes>=30.1,<36"


@dsl.component(base_image=BASE_IMAGE, packages_to_install=[KUBERNETES_CLIENT])
def train_model(
    image: str,
    output_repository: str,
    seed: int,
    model: dsl.Output[dsl.Model],
    command: list = [],
    args: list = [],
    datasets: list = [],
    hyperparameters: dict = {},
    accelerator_type: str = "",
    accelerator_count: int = 1,
    accelerator_topology: str = "",
    replicas: int = 1,
    namespace: str = "",
    run_name: str = "",
    pipeline_run_id: str = "",
    pipeline_task_name: str = "",
    timeout_seconds: int = 86400,
    require_provenance: bool = True,
) -> NamedTuple("Outputs", [("digest", str), ("run_name", str), ("namespace", str)]):
    """Create a TrainingRun, wait until its model's provenance is attached, output the model.

    The run is named `run_name`, else after the KFP task (`pipeline_task_name` and a hash of
    `pipeline_run_id`, so a retried step finds its own run instead of training twice), else
    `train-<random>`. It has no owner: deleting the pipeline run leaves the TrainingRun (and its
    provenance record) in place. Fails the step with `TrainingRunFailed` naming the run, the
    condition's reason and message when the run or its provenance fails, and with `TimeoutError`
    after `timeout_seconds`.
    """
    import collections
    import hashlib
    import json
    import os
    import re
    import time

    import urllib3
    from kubernetes import client, config, watch
    from kubernetes.client.rest import ApiException

    group, version, plural = "provenant.dev", "v1alpha1", "trainingruns"
    created_by = "pipelines.provenant.dev/kfp-run-id"

    class TrainingRunFailed(RuntimeError):
        pass

    def load_config():
        # In a pipeline step: the pod's ServiceAccount; elsewhere: $KUBECONFIG or ~/.kube/config.
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
            with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
                return f.read().strip()
        config.load_kube_config()
        _, context = config.list_kube_config_contexts()
        return (context or {}).get("context", {}).get("namespace", "")

    def derived_name():
        if run_name:
            return run_name, None
        if not pipeline_run_id:
            return None, "train-"
        # A DNS-1035 label of at most 48 characters (the TrainingRun name rule).
        stem = re.sub(r"[^a-z0-9-]+", "-", (pipeline_task_name or "train").lower())
        stem = re.sub(r"^[^a-z]+", "", stem).strip("-")[:37].rstrip("-") or "train"
        key = f"{pipeline_run_id}/{pipeline_task_name}".encode()
        return f"{stem}-{hashlib.sha256(key).hexdigest()[:10]}", None

    def condition(run, type_):
        for c in (run.get("status") or {}).get("conditions") or []:
            if c.get("type") == type_:
                return c
        return {}

    def failure(run, where, types):
        for type_ in types:
            c = condition(run, type_)
            if c.get("status") == "False":
                return TrainingRunFailed(
                    f"TrainingRun {where} failed: {type_}={c.get('status')} "
                    f"reason {c.get('reason')}: {c.get('message')}"
                )
        return TrainingRunFailed(f"TrainingRun {where} failed: {types[0]} gives no reason")

    def done(run, where):
        """True when the model is ready; raises when the run or its provenance failed."""
        status = run.get("status") or {}
        phase = status.get("phase")
        if phase == "Failed":
            raise failure(run, where, ["Succeeded", "MaterialsRecorded"])
        if phase != "Succeeded":
            return False
        state = (status.get("provenance") or {}).get("state")
        if state == "Failed":
            raise failure(run, where, ["ProvenanceAttached", "ProvenanceSigned"])
        if state == "Disabled" and require_provenance:
            raise TrainingRunFailed(
                f"TrainingRun {where} succeeded but its provenance state is Disabled (the "
                "controller signs no provenance); set require_provenance=False to accept it"
            )
        if state == "Disabled":
            return True
        return state == "Attached" and condition(run, "ProvenanceAttached").get("status") == "True"

    context_namespace = load_config()
    ns = namespace or context_namespace or "default"
    api = client.CustomObjectsApi()
    name, generate_name = derived_name()
    spec = {
        "image": image,
        "seed": seed,
        "replicas": replicas,
        "output": {"repository": output_repository},
    }
    for key, value in [
        ("command", command),
        ("args", args),
        ("datasets", datasets),
        ("hyperparameters", hyperparameters),
    ]:
        if value:
            spec[key] = value
    if accelerator_type:
        spec["accelerator"] = {"type": accelerator_type, "count": accelerator_count}
        if accelerator_topology:
            spec["accelerator"]["topology"] = accelerator_topology
    metadata = {"labels": {"app.kubernetes.io/created-by": "provenant-kfp"}, "annotations": {}}
    if pipeline_run_id:
        metadata["annotations"][created_by] = pipeline_run_id
    if name:
        metadata["name"] = name
    else:
        metadata["generateName"] = generate_name
    body = {
        "apiVersion": f"{group}/{version}",
        "kind": "TrainingRun",
        "metadata": metadata,
        "spec": spec,
    }
    try:
        run = api.create_namespaced_custom_object(group, version, ns, plural, body)
    except ApiException as e:
        if e.status != 409 or not name:
            try:  # The API server's Status names the refused field and why.
                detail = json.loads(e.body)["message"]
            except (TypeError, ValueError, KeyError):
                detail = e.body or e.reason
            raise TrainingRunFailed(
                f"creating TrainingRun {ns}/{name or generate_name}: HTTP {e.status}: {detail}"
            ) from None
        # A retried step: take over the run this task created before, never someone else's.
        # Anyone who may create runs here can read the name and annotation off this one, so the
        # spec must be exactly ours too (numbers compare by value, as the API server stores them).
        run = api.get_namespaced_custom_object(group, version, ns, plural, name)
        owner = (run["metadata"].get("annotations") or {}).get(created_by)
        if not pipeline_run_id or owner != pipeline_run_id or run.get("spec") != spec:
            raise TrainingRunFailed(
                f"TrainingRun {ns}/{name} already exists and is not this step's: created by "
                "another pipeline run or with another spec"
            ) from None
    name = run["metadata"]["name"]
    uid = run["metadata"]["uid"]
    where = f"{ns}/{name}"
    print(f"TrainingRun {where} created; waiting for its model and provenance", flush=True)

    def ours(obj):
        # Checked on every read: anyone with `edit` here may change the spec until the run's
        # first pod (the CRD freezes it only once status.startTime is set), or delete the run
        # and create another under its name; the model of either is not this step's.
        if obj["metadata"].get("uid") != uid:
            raise TrainingRunFailed(
                f"TrainingRun {where} was deleted and created again while this step waited"
            )
        if obj.get("spec") != spec:
            raise TrainingRunFailed(
                f"TrainingRun {where}: its spec was changed after this step created it, so its "
                "model is not the one this step asked for"
            )
        return obj

    # Retried with a growing pause until the deadline: a restarting API server, a dropped
    # connection, throttling (429) and server errors (5xx). Anything else fails the step.
    retryable = (429, 500, 502, 503, 504)
    pause = 1
    deadline = time.monotonic() + timeout_seconds
    stale = False  # the watch's resourceVersion expired (410 Gone): read the run again first
    while stale or not done(ours(run), where):
        remaining = int(deadline - time.monotonic())
        if remaining <= 0:
            status = run.get("status") or {}
            raise TimeoutError(
                f"TrainingRun {where} not done after {timeout_seconds}s: phase "
                f"{status.get('phase')}, provenance {(status.get('provenance') or {}).get('state')}"
            )
        try:
            if stale:
                run = api.get_namespaced_custom_object(group, version, ns, plural, name)
                stale = False
                continue
            watcher = watch.Watch()
            stream = watcher.stream(
                api.list_namespaced_custom_object,
                group,
                version,
                ns,
                plural,
                field_selector=f"metadata.name={name}",
                resource_version=run["metadata"]["resourceVersion"],
                timeout_seconds=min(remaining, 300),
                # A connection that goes silent must not hold the step past its timeout.
                _request_timeout=min(remaining, 300) + 30,
            )
            for event in stream:
                if event["type"] == "DELETED":
                    raise TrainingRunFailed(f"TrainingRun {where} was deleted while waiting")
                if event["type"] in ("ADDED", "MODIFIED"):
                    run = ours(event["object"])
                    if done(run, where):
                        watcher.stop()
            pause = 1
            continue
        except ApiException as e:
            if e.status == 410:
                stale = True
                continue
            if e.status == 404:
                raise TrainingRunFailed(f"TrainingRun {where} was deleted while waiting") from None
            if e.status not in retryable:
                raise
            problem = f"HTTP {e.status} {e.reason}"
        except urllib3.exceptions.HTTPError as e:
            problem = str(e)
        wait = min(pause, max(deadline - time.monotonic(), 0))
        print(f"watching TrainingRun {where}: {problem}; again in {wait:.0f}s", flush=True)
        time.sleep(wait)
        pause = min(pause * 2, 30)

    status = run["status"]
    outputs = status.get("outputs") or []
    if not outputs:
        raise TrainingRunFailed(f"TrainingRun {where} succeeded without a model in status.outputs")
    first = outputs[0]
    provenance = status.get("provenance") or {}
    model.uri = f"oci://{first['repository']}@{first['digest']}"
    model.metadata.update(
        {
            "trainingRun": name,
            "namespace": ns,
            "uid": run["metadata"].get("uid", ""),
            "digest": first["digest"],
            "outputs": [f"{o['repository']}@{o['digest']}" for o in outputs],
            "provenanceState": provenance.get("state", ""),
            "attestations": provenance.get("attestations") or [],
            "predicateType": provenance.get("predicateType") or "",
            "envelopeDigest": provenance.get("envelopeDigest") or "",
            "keyId": provenance.get("keyId") or "",
        }
    )
    print(f"TrainingRun {where}: model {model.uri}", flush=True)
    Outputs = collections.namedtuple("Outputs", ["digest", "run_name", "namespace"])
    return Outputs(first["digest"], name, ns)
