"""Offline validation of the KubeRay manifests in k8s/ (kubeconform is not installable here).

The schema below covers the fields of KubeRay v1.7.0's `ray.io/v1` API (its generated CRD reference,
docs/reference/api.md, from ray-operator/apis/ray/v1/rayjob_types.go and raycluster_types.go:
RayJobSpec, RayClusterSpec, HeadGroupSpec, WorkerGroupSpec, AutoscalerOptions, AuthOptions) and the
Kubernetes core/v1 pod template, with their names and nesting. The fields lightwork uses are typed;
the others KubeRay knows are accepted as objects. Every object rejects unknown keys, so a typo fails
here instead of being silently dropped by the API server.

Beyond the schema, the properties the manifests exist for: Ray's object store fits each pod's
memory-backed /dev/shm, the RayJob's submitter is a light pod, an unschedulable cluster fails by a
deadline, GPU pods take no CPU-only work, and no credential value is in what Ray shows. Each
property is a function returning the problems it finds, run on the manifests (none) and on broken
copies of them (the problem named), so that every check is seen to fail.
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
S3_SECRET = "lightwork-s3"
AWS_KEYS = {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}
GPU = "nvidia.com/gpu"
# The submitter only runs the Ray CLI: at most this much (KubeRay's own default submitter is 1 CPU, 1Gi).
SUBMITTER_MAX_CPU, SUBMITTER_MAX_MEMORY = 1.0, 1 << 30


def strict(required: tuple[str, ...] = (), **properties) -> dict:
    """A JSON-schema object with exactly these properties (no others)."""
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


def array(items: dict) -> dict:
    return {"type": "array", "items": items}


def string_map() -> dict:
    return {"type": "object", "additionalProperties": {"type": "string"}}


STRING = {"type": "string"}
BOOLEAN = {"type": "boolean"}
INT = {"type": "integer"}
POSITIVE = {"type": "integer", "minimum": 1}
NON_NEGATIVE = {"type": "integer", "minimum": 0}
OBJECT = {"type": "object"}  # a field KubeRay knows that lightwork does not use: accepted, not checked
QUANTITY = {
    "oneOf": [{"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$"}, {"type": "number"}]
}
RESOURCE_LIST = {"type": "object", "additionalProperties": QUANTITY}
METADATA = strict(("name",), name=STRING, namespace=STRING, labels=string_map(), annotations=string_map())

# Kubernetes core/v1 (the subset used): Container, Volume, Toleration, PodSpec, PodTemplateSpec.
ENV_VAR = strict(
    ("name",),
    name=STRING,
    value=STRING,
    valueFrom=strict(secretKeyRef=strict(("name", "key"), name=STRING, key=STRING, optional=BOOLEAN)),
)
ENV_FROM = strict(
    prefix=STRING,
    secretRef=strict(("name",), name=STRING, optional=BOOLEAN),
    configMapRef=strict(("name",), name=STRING, optional=BOOLEAN),
)
CONTAINER = strict(
    ("name", "image"),
    name=STRING,
    image=STRING,
    imagePullPolicy={"enum": ["Always", "IfNotPresent", "Never"]},
    command=array(STRING),
    args=array(STRING),
    ports=array(strict(("containerPort",), containerPort=INT, name=STRING, protocol={"enum": ["TCP", "UDP", "SCTP"]})),
    env=array(ENV_VAR),
    envFrom=array(ENV_FROM),
    resources=strict(requests=RESOURCE_LIST, limits=RESOURCE_LIST),
    volumeMounts=array(strict(("name", "mountPath"), name=STRING, mountPath=STRING, readOnly=BOOLEAN, subPath=STRING)),
)
VOLUME = strict(("name",), name=STRING, emptyDir=strict(medium={"enum": ["", "Memory"]}, sizeLimit=QUANTITY))
TOLERATION = strict(
    key=STRING,
    operator={"enum": ["Exists", "Equal"]},
    value=STRING,
    effect={"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]},
    tolerationSeconds=INT,
)
POD_TEMPLATE = strict(
    ("spec",),
    metadata=strict(labels=string_map(), annotations=string_map()),
    spec=strict(
        ("containers",),
        containers=array(CONTAINER),
        volumes=array(VOLUME),
        tolerations=array(TOLERATION),
        nodeSelector=string_map(),
        serviceAccountName=STRING,
        restartPolicy={"enum": ["Always", "OnFailure", "Never"]},
    ),
)

# KubeRay ray.io/v1 (v1.7.0).
HEAD_GROUP = strict(
    ("template",),
    rayStartParams=string_map(),
    template=POD_TEMPLATE,
    headService=OBJECT,
    serviceType=STRING,
    enableIngress=BOOLEAN,
    ingressOptions=OBJECT,
    resources=string_map(),
    labels=string_map(),
)
WORKER_GROUP = strict(
    ("groupName", "template"),
    groupName=STRING,
    replicas=NON_NEGATIVE,
    minReplicas=NON_NEGATIVE,
    maxReplicas=NON_NEGATIVE,
    numOfHosts=NON_NEGATIVE,
    idleTimeoutSeconds=INT,
    priority=INT,
    rayStartParams=string_map(),
    template=POD_TEMPLATE,
    resources=string_map(),
    labels=string_map(),
    scaleStrategy=OBJECT,
    suspend=BOOLEAN,
)
RAY_CLUSTER_SPEC = strict(
    ("headGroupSpec",),
    rayVersion=STRING,
    enableInTreeAutoscaling=BOOLEAN,
    autoscalerOptions=strict(
        upscalingMode={"enum": ["Default", "Aggressive", "Conservative"]},
        idleTimeoutSeconds=INT,
        version={"enum": ["v1", "v2"]},
        resources=strict(requests=RESOURCE_LIST, limits=RESOURCE_LIST),
        env=array(ENV_VAR),
        envFrom=array(ENV_FROM),
        image=STRING,
        imagePullPolicy=STRING,
        securityContext=OBJECT,
        volumeMounts=array(OBJECT),
        command=array(STRING),
        args=array(STRING),
    ),
    authOptions=strict(mode={"enum": ["disabled", "token"]}, secretName=STRING, enableK8sTokenAuth=BOOLEAN),
    headGroupSpec=HEAD_GROUP,
    workerGroupSpecs=array(WORKER_GROUP),
    suspend=BOOLEAN,
    managedBy=STRING,
    upgradeStrategy=OBJECT,
    headServiceAnnotations=string_map(),
    gcsFaultToleranceOptions=OBJECT,
    historyServerOptions=OBJECT,
    networkPolicy=OBJECT,
    tlsOptions=OBJECT,
)
RAY_CLUSTER = strict(
    ("apiVersion", "kind", "metadata", "spec"),
    apiVersion={"const": "ray.io/v1"},
    kind={"const": "RayCluster"},
    metadata=METADATA,
    spec=RAY_CLUSTER_SPEC,
)
RAY_JOB = strict(
    ("apiVersion", "kind", "metadata", "spec"),
    apiVersion={"const": "ray.io/v1"},
    kind={"const": "RayJob"},
    metadata=METADATA,
    spec=strict(
        ("entrypoint", "rayClusterSpec"),
        entrypoint=STRING,
        runtimeEnvYAML=STRING,
        jobId=STRING,
        metadata=string_map(),
        shutdownAfterJobFinishes=BOOLEAN,
        ttlSecondsAfterFinished=NON_NEGATIVE,
        activeDeadlineSeconds=POSITIVE,
        preRunningDeadlineSeconds=POSITIVE,
        backoffLimit=NON_NEGATIVE,
        suspend=BOOLEAN,
        submissionMode={"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
        entrypointNumCpus={"type": "number"},
        entrypointNumGpus={"type": "number"},
        entrypointResources=STRING,
        submitterConfig=strict(backoffLimit=INT),
        submitterPodTemplate=POD_TEMPLATE,
        rayClusterSpec=RAY_CLUSTER_SPEC,
        clusterSelector=string_map(),
        managedBy=STRING,
        deletionStrategy=OBJECT,
    ),
)
SCHEMAS = {"RayCluster": RAY_CLUSTER, "RayJob": RAY_JOB}


def load(name: str) -> dict:
    return yaml.safe_load((K8S / name).read_text())


def cluster_spec(manifest: dict) -> dict:
    return manifest["spec"]["rayClusterSpec"] if manifest["kind"] == "RayJob" else manifest["spec"]


def validate(manifest: dict) -> None:
    jsonschema.validate(manifest, SCHEMAS[manifest["kind"]])


def groups(spec: dict) -> list[tuple[str, dict]]:
    """(group name, group spec) for the head and every worker group."""
    return [("head", spec["headGroupSpec"])] + [(group["groupName"], group) for group in spec["workerGroupSpecs"]]


def pods(spec: dict) -> list[tuple[str, dict]]:
    """(group name, pod spec) for the head and every worker group."""
    return [(name, group["template"]["spec"]) for name, group in groups(spec)]


def group(spec: dict, name: str) -> dict:
    return next(g for g in spec["workerGroupSpecs"] if g["groupName"] == name)


def ray_container(pod: dict) -> dict:
    """KubeRay runs Ray in a pod's first container."""
    return pod["containers"][0]


_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity as a number: "16Gi" -> 17179869184, "200m" -> 0.2, "4" -> 4."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(m|k|Ki|M|Mi|G|Gi|T|Ti)?", str(value))
    if match is None:
        raise ValueError(f"{value!r}: not a Kubernetes quantity")
    number, unit = float(match.group(1)), match.group(2) or ""
    return number / 1000 if unit == "m" else number * _UNITS[unit]


MANIFESTS = ["raycluster.yaml", "rayjob.yaml"]


# --- the properties, each a function of a manifest returning the problems it finds ---------------


def shm_problems(spec: dict) -> list[str]:
    """Every Ray pod: an explicit object store no larger than its memory-backed /dev/shm, which is
    smaller than the container's memory (its pages count against that limit)."""
    problems = []
    for name, grp in groups(spec):
        pod = grp["template"]["spec"]
        container = ray_container(pod)
        store = grp.get("rayStartParams", {}).get("object-store-memory")
        if store is None or not store.isdigit():
            problems.append(f"{name}: rayStartParams object-store-memory is not set in bytes ({store!r})")
            continue
        mounts = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/dev/shm"]
        volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
        shm = volumes.get(mounts[0]["name"], {}).get("emptyDir") if mounts else None
        if shm is None or shm.get("medium") != "Memory" or "sizeLimit" not in shm:
            problems.append(f"{name}: /dev/shm is not a memory-backed emptyDir with a sizeLimit")
            continue
        shm_bytes, memory = quantity(shm["sizeLimit"]), quantity(container["resources"]["limits"]["memory"])
        if shm_bytes < int(store):
            problems.append(
                f"{name}: /dev/shm {shm['sizeLimit']} < object store {int(store) / 2**30:g}Gi: "
                "Ray would put its object store on disk"
            )
        if shm_bytes >= memory:
            problems.append(
                f"{name}: /dev/shm {shm['sizeLimit']} leaves no memory in the pod's "
                f"{container['resources']['limits']['memory']}"
            )
    return problems


def submitter_problems(job: dict) -> list[str]:
    """The RayJob's submitter: its own template, with a Ray image that is not the cluster's (the big
    training image), of the cluster's Ray version, small resources, no GPU, no credentials, no
    command (KubeRay fills in `ray job submit`), and a restart policy a Kubernetes Job accepts."""
    template = job.get("submitterPodTemplate")
    if template is None:
        return ["no submitterPodTemplate: the submitter would pull the head's image"]
    pod = template["spec"]
    container = pod["containers"][0]
    problems = []
    cluster_images = {c["image"] for _, p in pods(job["rayClusterSpec"]) for c in p["containers"]}
    repository, _, tag = container["image"].rpartition(":")
    if container["image"] in cluster_images:
        problems.append(f"submitter image {container['image']} is the cluster's image")
    elif repository != "rayproject/ray" or not tag.startswith(job["rayClusterSpec"]["rayVersion"] + "-"):
        problems.append(f"submitter image {container['image']} is not rayproject/ray of the cluster's Ray version")
    resources = container.get("resources", {})
    for kind in ("requests", "limits"):
        amounts = resources.get(kind, {})
        if "cpu" not in amounts or "memory" not in amounts:
            problems.append(f"submitter: no cpu/memory {kind}")
            continue
        if quantity(amounts["cpu"]) > SUBMITTER_MAX_CPU or quantity(amounts["memory"]) > SUBMITTER_MAX_MEMORY:
            problems.append(f"submitter {kind} {amounts} are more than a CLI needs")
        if GPU in amounts:
            problems.append(f"submitter {kind} a GPU")
    if container.get("envFrom") or container.get("env"):
        problems.append("submitter: gets environment (credentials) it does not need")
    if "command" in container:
        problems.append("submitter: a command of its own replaces KubeRay's `ray job submit`")
    if pod.get("restartPolicy") not in ("Never", "OnFailure"):
        problems.append(f"submitter: restartPolicy {pod.get('restartPolicy')!r} (a Job needs Never or OnFailure)")
    return problems


def gpu_problems(spec: dict, cpus_per_worker: float, gpus_per_worker: float | None) -> list[str]:
    """GPU pods take no CPU-only work: Kubernetes (they alone tolerate the GPU taint, they alone ask
    for GPUs) and Ray (their num-cpus is what their Train workers need and less than the pod's CPUs)."""
    problems = []
    for name, grp in groups(spec):
        pod = grp["template"]["spec"]
        limits = ray_container(pod)["resources"]["limits"]
        tolerates = any(t.get("key") == GPU and t.get("effect") == "NoSchedule" for t in pod.get("tolerations", []))
        gpus = quantity(limits.get(GPU, 0))
        if gpus and not tolerates:
            problems.append(f"{name}: asks for GPUs but does not tolerate the {GPU} taint of GPU nodes")
        if not gpus:
            if tolerates:
                problems.append(f"{name}: a CPU-only group tolerates the GPU nodes' taint")
            continue
        workers = gpus / (gpus_per_worker or 1.0)  # None: 1 GPU per worker where there are GPUs
        num_cpus = grp.get("rayStartParams", {}).get("num-cpus")
        if num_cpus is None:
            problems.append(f"{name}: no num-cpus: Ray would offer all {limits['cpu']} CPUs to CPU-only work")
        elif float(num_cpus) != workers * cpus_per_worker:
            problems.append(
                f"{name}: num-cpus {num_cpus} is not what its {workers:g} Train worker(s) need "
                f"({workers:g} x cpus_per_worker {cpus_per_worker:g})"
            )
        elif float(num_cpus) >= quantity(limits["cpu"]):
            problems.append(f"{name}: num-cpus {num_cpus} leaves none of the pod's {limits['cpu']} CPUs to Ray itself")
    return problems


CREDENTIAL_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)


def credential_problems(manifest: dict, secret_values: set[str]) -> list[str]:
    """No credential in what Ray or the manifest shows: the RayJob's runtimeEnvYAML (Ray's dashboard
    and state API show a runtime_env), its metadata and entrypoint, or a container's literal env."""
    problems = []
    spec = manifest["spec"]
    if manifest["kind"] == "RayJob":
        runtime_env = yaml.safe_load(spec.get("runtimeEnvYAML", "")) or {}
        for name, value in (runtime_env.get("env_vars") or {}).items():
            if name in AWS_KEYS or CREDENTIAL_NAME.search(name) or str(value) in secret_values:
                problems.append(f"runtimeEnvYAML env_vars {name}: a credential in the runtime_env")
        shown = [spec.get("entrypoint", ""), spec.get("runtimeEnvYAML", ""), *spec.get("metadata", {}).values()]
        problems += [
            f"a secret value in the RayJob: {text[:40]!r}" for text in shown for value in secret_values if value in text
        ]
    for name, pod in pods(cluster_spec(manifest)):
        for container in pod["containers"]:
            for env in container.get("env", []):
                if "value" in env and (
                    env["name"] in AWS_KEYS or CREDENTIAL_NAME.search(env["name"]) or env["value"] in secret_values
                ):
                    problems.append(f"{name}: {env['name']} written into the manifest, not read from a Secret")
    return problems


def secret_values() -> set[str]:
    documents = yaml.safe_load_all((K8S / "secret.example.yaml").read_text())
    return {value for doc in documents for value in doc["stringData"].values()}


def job_overrides() -> list[str]:
    from lightwork.jobs import pipeline

    return pipeline.build_parser().parse_args(shlex.split(load("rayjob.yaml")["spec"]["entrypoint"])[2:]).overrides


def job_resources():
    """The `resources` section of the RayJob's run: the brain preset with the entrypoint's --set."""
    from lightwork.config import load_config

    return load_config(preset="brain", overrides=job_overrides()).resources


# --- the schema ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_matches_the_kuberay_schema(name):
    validate(load(name))


@pytest.mark.parametrize(
    "path, typo",
    [
        (("spec",), "shutdownAfterJobFinish"),
        (("spec",), "preRunningDeadlineSecond"),
        (("spec",), "submitterPodTemplates"),
        (("spec", "submitterPodTemplate", "spec", "containers", 0), "resource"),
        (("spec", "rayClusterSpec"), "enableInTreeAutoScaling"),
        (("spec", "rayClusterSpec", "workerGroupSpecs", 1), "maxReplica"),
        (("spec", "rayClusterSpec", "headGroupSpec", "template", "spec", "containers", 0), "volumeMount"),
        (("spec", "rayClusterSpec", "headGroupSpec", "template", "spec", "volumes", 0, "emptyDir"), "medum"),
    ],
)
def test_a_typo_in_a_key_is_rejected(path, typo):
    manifest = copy.deepcopy(load("rayjob.yaml"))
    node = manifest
    for step in path:
        node = node[step]
    node[typo] = node.get(typo, "x")
    with pytest.raises(jsonschema.ValidationError, match=re.escape(typo)):
        validate(manifest)


@pytest.mark.parametrize(
    "path, value",
    [
        (("spec", "workerGroupSpecs", 0, "maxReplicas"), "sixteen"),
        (("spec", "headGroupSpec", "rayStartParams", "object-store-memory"), 4294967296),  # must be a string
        (("spec", "workerGroupSpecs", 1, "template", "spec", "volumes", 0, "emptyDir", "sizeLimit"), "20 GiB"),
    ],
)
def test_a_wrong_value_type_is_rejected(path, value):
    manifest = copy.deepcopy(load("raycluster.yaml"))
    node = manifest
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        validate(manifest)


def test_a_zero_pre_running_deadline_is_rejected():
    # KubeRay: "Value must be a positive integer" (Minimum: 1).
    manifest = copy.deepcopy(load("rayjob.yaml"))
    manifest["spec"]["preRunningDeadlineSeconds"] = 0
    with pytest.raises(jsonschema.ValidationError):
        validate(manifest)


def test_quantities_are_read_as_kubernetes_reads_them():
    assert quantity("16Gi") == 16 * 2**30 and quantity("200m") == 0.2 and quantity("4") == 4
    assert quantity("1G") == 10**9 and quantity(1.5) == 1.5
    with pytest.raises(ValueError, match="20 GiB"):
        quantity("20 GiB")


# --- the two cluster shapes ------------------------------------------------------------------------


def test_the_interactive_cluster_is_the_jobs_cluster():
    assert load("raycluster.yaml")["spec"] == load("rayjob.yaml")["spec"]["rayClusterSpec"]


@pytest.mark.parametrize("name", MANIFESTS)
def test_head_takes_no_work_and_workers_autoscale(name):
    spec = cluster_spec(load(name))
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    # autoscaler v2: the one lightwork can ask whether it can add a trial's bundle
    assert spec["autoscalerOptions"]["version"] == "v2"
    for worker in spec["workerGroupSpecs"]:
        assert 0 <= worker["minReplicas"] <= worker.get("replicas", 0) <= worker["maxReplicas"]
        assert worker["maxReplicas"] > worker["minReplicas"], f"{worker['groupName']} cannot scale"
    assert group(spec, "gpu-training")["minReplicas"] == 0, "idle GPUs would be paid for"


# --- /dev/shm and the object store -----------------------------------------------------------------


@pytest.mark.parametrize("name", MANIFESTS)
def test_every_pod_has_an_in_memory_dev_shm_and_the_s3_secret(name):
    spec = cluster_spec(load(name))
    for group_name, pod in pods(spec):
        for container in pod["containers"]:
            secrets = [source["secretRef"]["name"] for source in container.get("envFrom", []) if "secretRef" in source]
            assert S3_SECRET in secrets, f"{group_name}: S3 credentials secret not referenced"
    assert shm_problems(spec) == []


@pytest.mark.parametrize(
    "group_index, break_it, problem",
    [
        (0, lambda g: g["rayStartParams"].pop("object-store-memory"), "object-store-memory is not set"),
        (1, lambda g: g["rayStartParams"].update({"object-store-memory": "10Gi"}), "not set in bytes"),
        (1, lambda g: g["template"]["spec"]["volumes"][0]["emptyDir"].update(sizeLimit="8Gi"), "on disk"),
        (2, lambda g: g["rayStartParams"].update({"object-store-memory": str(24 * 2**30)}), "on disk"),
        (2, lambda g: g["template"]["spec"]["volumes"][0]["emptyDir"].update(sizeLimit="64Gi"), "leaves no memory"),
        (0, lambda g: g["template"]["spec"]["volumes"][0]["emptyDir"].pop("medium"), "memory-backed"),
        (1, lambda g: g["template"]["spec"]["containers"][0].pop("volumeMounts"), "memory-backed"),
    ],
)
def test_a_dev_shm_smaller_than_the_object_store_is_found(group_index, break_it, problem):
    spec = copy.deepcopy(cluster_spec(load("rayjob.yaml")))
    break_it(groups(spec)[group_index][1])
    problems = shm_problems(spec)
    assert len(problems) == 1 and problem in problems[0], problems


# --- the submitter ---------------------------------------------------------------------------------


def test_the_submitter_is_a_light_pod():
    assert submitter_problems(load("rayjob.yaml")["spec"]) == []


@pytest.mark.parametrize(
    "break_it, problem",
    [
        (lambda job: job.pop("submitterPodTemplate"), "no submitterPodTemplate"),
        (
            lambda job: job["submitterPodTemplate"]["spec"]["containers"][0].update(
                image=job["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
            ),
            "is the cluster's image",
        ),
        (
            lambda job: job["submitterPodTemplate"]["spec"]["containers"][0].update(
                image="rayproject/ray:2.9.0-py311-cpu"
            ),
            "not rayproject/ray of the cluster's Ray version",
        ),
        (
            lambda job: job["submitterPodTemplate"]["spec"]["containers"][0]["resources"]["limits"].update(
                memory="8Gi"
            ),
            "more than a CLI needs",
        ),
        (
            lambda job: job["submitterPodTemplate"]["spec"]["containers"][0]["resources"].pop("requests"),
            "no cpu/memory requests",
        ),
        (
            lambda job: job["submitterPodTemplate"]["spec"]["containers"][0].update(
                envFrom=[{"secretRef": {"name": S3_SECRET}}]
            ),
            "credentials",
        ),
        (
            lambda job: job["submitterPodTemplate"]["spec"]["containers"][0].update(command=["sleep", "1"]),
            "replaces KubeRay's",
        ),
        (lambda job: job["submitterPodTemplate"]["spec"].pop("restartPolicy"), "restartPolicy"),
    ],
)
def test_a_heavy_or_broken_submitter_is_found(break_it, problem):
    job = copy.deepcopy(load("rayjob.yaml")["spec"])
    break_it(job)
    problems = submitter_problems(job)
    assert len(problems) == 1 and problem in problems[0], problems


# --- deadlines and the job's lifecycle ------------------------------------------------------------


def test_an_unschedulable_cluster_fails_by_the_pre_running_deadline():
    job = load("rayjob.yaml")["spec"]
    # KubeRay's name for it; activeDeadlineSeconds alone would let a cluster that never comes up wait 48 h.
    deadline = job["preRunningDeadlineSeconds"]
    assert 0 < deadline <= 3600 < job["activeDeadlineSeconds"]
    assert job["shutdownAfterJobFinishes"] is True, "a failed RayJob must release its cluster"


def test_rayjob_shuts_down_and_runs_the_pipeline_with_valid_arguments():
    from lightwork.jobs import pipeline

    job = load("rayjob.yaml")["spec"]
    assert job["shutdownAfterJobFinishes"] is True
    command = shlex.split(job["entrypoint"])
    assert command[:2] == ["python", "/home/ray/lightwork/jobs/pipeline.py"]
    args = pipeline.build_parser().parse_args(command[2:])
    for uri in (args.data, args.test_data, args.storage):
        assert uri.startswith("s3://"), f"{uri}: the job's data and storage must be on S3"
    assert args.name, "a resubmitted or retried job resumes only under the same --name"


# --- GPU pods take no CPU-only work ----------------------------------------------------------------


@pytest.mark.parametrize("name", MANIFESTS)
def test_gpu_pods_take_only_what_their_train_workers_need(name):
    resources = job_resources()  # the entrypoint's overrides name real config fields, or this raises
    spec = cluster_spec(load(name))
    assert gpu_problems(spec, resources.cpus_per_worker, resources.gpus_per_worker) == []
    # The synthesis CPUs of two trials fit one synthesis pod, with room for their trial drivers.
    cpu_pod = quantity(ray_container(group(spec, "cpu-synthesis")["template"]["spec"])["resources"]["limits"]["cpu"])
    assert 2 * resources.data_cpus_per_trial < cpu_pod


@pytest.mark.parametrize(
    "break_it, cpus_per_worker, problem",
    [
        (lambda spec: group(spec, "gpu-training")["rayStartParams"].pop("num-cpus"), 4, "no num-cpus"),
        (lambda spec: None, 2, "is not what its 1 Train worker(s) need"),
        (lambda spec: group(spec, "gpu-training")["rayStartParams"].update({"num-cpus": "8"}), 8, "leaves none"),
        (lambda spec: group(spec, "gpu-training")["template"]["spec"].pop("tolerations"), 4, "does not tolerate"),
        (
            lambda spec: group(spec, "cpu-synthesis")["template"]["spec"].update(
                tolerations=[{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
            ),
            4,
            "CPU-only group tolerates",
        ),
    ],
)
def test_gpu_pods_open_to_cpu_work_are_found(break_it, cpus_per_worker, problem):
    spec = copy.deepcopy(cluster_spec(load("rayjob.yaml")))
    break_it(spec)
    problems = gpu_problems(spec, cpus_per_worker, None)
    assert len(problems) == 1 and problem in problems[0], problems


def test_gpu_group_asks_for_whole_gpus_the_cpu_group_for_none():
    spec = cluster_spec(load("rayjob.yaml"))
    gpu_container = ray_container(group(spec, "gpu-training")["template"]["spec"])
    limits, requests = gpu_container["resources"]["limits"], gpu_container["resources"]["requests"]
    assert int(limits[GPU]) >= 1 and requests[GPU] == limits[GPU]
    assert GPU not in ray_container(group(spec, "cpu-synthesis")["template"]["spec"])["resources"]["limits"]


# --- credentials ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MANIFESTS)
def test_no_credential_is_in_what_ray_shows(name):
    assert credential_problems(load(name), secret_values()) == []


@pytest.mark.parametrize(
    "break_it, problem",
    [
        (
            lambda m: m["spec"].update(runtimeEnvYAML="env_vars:\n  AWS_SECRET_ACCESS_KEY: abc\n"),
            "runtimeEnvYAML env_vars",
        ),
        (lambda m: m["spec"].update(runtimeEnvYAML="env_vars:\n  RAY_AUTH_TOKEN: abc\n"), "runtimeEnvYAML env_vars"),
        (lambda m: m["spec"].update(metadata={"note": "REPLACE_ME"}), "a secret value in the RayJob"),
        (
            lambda m: m["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0].update(
                env=[{"name": "AWS_ACCESS_KEY_ID", "value": "AKIA0000"}]
            ),
            "head: AWS_ACCESS_KEY_ID written",
        ),
    ],
)
def test_a_credential_in_the_job_is_found(break_it, problem):
    manifest = copy.deepcopy(load("rayjob.yaml"))
    break_it(manifest)
    problems = credential_problems(manifest, secret_values())
    assert len(problems) == 1 and problem in problems[0], problems


def test_the_secret_example_defines_what_the_manifests_reference():
    secrets = {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all((K8S / "secret.example.yaml").read_text())}
    assert AWS_KEYS <= set(secrets[S3_SECRET]["stringData"])
    for name in MANIFESTS:
        auth = cluster_spec(load(name))["authOptions"]
        assert auth["mode"] == "token" and "auth_token" in secrets[auth["secretName"]]["stringData"]


# --- versions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MANIFESTS)
def test_image_tag_matches_ray_version_everywhere(name):
    manifest = load(name)
    spec = cluster_spec(manifest)
    version = spec["rayVersion"]
    dockerfile = (K8S / "Dockerfile").read_text()
    assert re.search(rf"^ARG RAY_VERSION={re.escape(version)}$", dockerfile, re.M)
    assert "FROM rayproject/ray:${RAY_VERSION}-py311" in dockerfile
    pyproject = (REPO / "pyproject.toml").read_text()
    assert "==" + version in re.search(r'"ray\[[^\]]*\]==[^"]+"', pyproject).group(0)
    containers = [(group_name, c) for group_name, pod in pods(spec) for c in pod["containers"]]
    if "submitterPodTemplate" in manifest["spec"]:
        containers += [("submitter", c) for c in manifest["spec"]["submitterPodTemplate"]["spec"]["containers"]]
    for group_name, container in containers:
        tag = container["image"].rsplit(":", 1)[1]
        assert tag.split("-")[0] == version, f"{group_name}: image tag {tag} does not match rayVersion {version}"
