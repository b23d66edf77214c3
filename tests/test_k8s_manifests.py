"""Offline validation of the KubeRay manifests in k8s/ (kubeconform is not installable here).

The schema below covers the fields lightwork's manifests use, with the names and nesting of the
real APIs: KubeRay's `ray.io/v1` Go types (ray-operator/apis/ray/v1/rayjob_types.go and
raycluster_types.go: RayJobSpec, RayClusterSpec, HeadGroupSpec, WorkerGroupSpec,
AutoscalerOptions, AuthOptions) and the Kubernetes core/v1 pod template. Every object rejects
unknown keys, so a typo fails here instead of being silently dropped by the API server.
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
NON_NEGATIVE = {"type": "integer", "minimum": 0}
QUANTITY = {"oneOf": [{"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$"}, {"type": "number"}]}
RESOURCE_LIST = {"type": "object", "additionalProperties": QUANTITY}
METADATA = strict(("name",), name=STRING, namespace=STRING, labels=string_map(), annotations=string_map())

# Kubernetes core/v1 (the subset used): Container, Volume, Toleration, PodSpec, PodTemplateSpec.
ENV_VAR = strict(
    ("name",), name=STRING, value=STRING,
    valueFrom=strict(secretKeyRef=strict(("name", "key"), name=STRING, key=STRING, optional=BOOLEAN)),
)
ENV_FROM = strict(prefix=STRING, secretRef=strict(("name",), name=STRING, optional=BOOLEAN),
                  configMapRef=strict(("name",), name=STRING, optional=BOOLEAN))
CONTAINER = strict(
    ("name", "image"),
    name=STRING, image=STRING,
    imagePullPolicy={"enum": ["Always", "IfNotPresent", "Never"]},
    command=array(STRING), args=array(STRING),
    ports=array(strict(("containerPort",), containerPort=INT, name=STRING, protocol={"enum": ["TCP", "UDP", "SCTP"]})),
    env=array(ENV_VAR), envFrom=array(ENV_FROM),
    resources=strict(requests=RESOURCE_LIST, limits=RESOURCE_LIST),
    volumeMounts=array(strict(("name", "mountPath"), name=STRING, mountPath=STRING, readOnly=BOOLEAN, subPath=STRING)),
)
VOLUME = strict(("name",), name=STRING, emptyDir=strict(medium={"enum": ["", "Memory"]}, sizeLimit=QUANTITY))
TOLERATION = strict(key=STRING, operator={"enum": ["Exists", "Equal"]}, value=STRING,
                    effect={"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]}, tolerationSeconds=INT)
POD_TEMPLATE = strict(
    ("spec",),
    metadata=strict(labels=string_map(), annotations=string_map()),
    spec=strict(("containers",), containers=array(CONTAINER), volumes=array(VOLUME), tolerations=array(TOLERATION),
                nodeSelector=string_map(), serviceAccountName=STRING, restartPolicy=STRING),
)

# KubeRay ray.io/v1.
HEAD_GROUP = strict(("template",), rayStartParams=string_map(), template=POD_TEMPLATE,
                    serviceType=STRING, enableIngress=BOOLEAN, resources=string_map(), labels=string_map())
WORKER_GROUP = strict(
    ("groupName", "template"),
    groupName=STRING, replicas=NON_NEGATIVE, minReplicas=NON_NEGATIVE, maxReplicas=NON_NEGATIVE,
    numOfHosts=NON_NEGATIVE, idleTimeoutSeconds=INT, rayStartParams=string_map(), template=POD_TEMPLATE,
    resources=string_map(), labels=string_map(),
)
RAY_CLUSTER_SPEC = strict(
    ("headGroupSpec",),
    rayVersion=STRING, enableInTreeAutoscaling=BOOLEAN,
    autoscalerOptions=strict(upscalingMode={"enum": ["Default", "Aggressive", "Conservative"]}, idleTimeoutSeconds=INT,
                             version={"enum": ["v1", "v2"]}, resources=strict(requests=RESOURCE_LIST, limits=RESOURCE_LIST),
                             env=array(ENV_VAR), envFrom=array(ENV_FROM)),
    authOptions=strict(mode={"enum": ["disabled", "token"]}, secretName=STRING, enableK8sTokenAuth=BOOLEAN),
    headGroupSpec=HEAD_GROUP, workerGroupSpecs=array(WORKER_GROUP), suspend=BOOLEAN,
)
RAY_CLUSTER = strict(("apiVersion", "kind", "metadata", "spec"), apiVersion={"const": "ray.io/v1"},
                     kind={"const": "RayCluster"}, metadata=METADATA, spec=RAY_CLUSTER_SPEC)
RAY_JOB = strict(
    ("apiVersion", "kind", "metadata", "spec"),
    apiVersion={"const": "ray.io/v1"}, kind={"const": "RayJob"}, metadata=METADATA,
    spec=strict(
        ("entrypoint", "rayClusterSpec"),
        entrypoint=STRING, runtimeEnvYAML=STRING, jobId=STRING, metadata=string_map(),
        shutdownAfterJobFinishes=BOOLEAN, ttlSecondsAfterFinished=NON_NEGATIVE, activeDeadlineSeconds=INT,
        backoffLimit=NON_NEGATIVE, suspend=BOOLEAN, submissionMode={"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode"]},
        entrypointNumCpus={"type": "number"}, entrypointNumGpus={"type": "number"}, entrypointResources=STRING,
        submitterConfig=strict(backoffLimit=INT), rayClusterSpec=RAY_CLUSTER_SPEC,
    ),
)
SCHEMAS = {"RayCluster": RAY_CLUSTER, "RayJob": RAY_JOB}


def load(name: str) -> dict:
    return yaml.safe_load((K8S / name).read_text())


def cluster_spec(manifest: dict) -> dict:
    return manifest["spec"]["rayClusterSpec"] if manifest["kind"] == "RayJob" else manifest["spec"]


def validate(manifest: dict) -> None:
    jsonschema.validate(manifest, SCHEMAS[manifest["kind"]])


def pods(spec: dict) -> list[tuple[str, dict]]:
    """(group name, pod spec) for the head and every worker group."""
    return [("head", spec["headGroupSpec"]["template"]["spec"])] + [
        (group["groupName"], group["template"]["spec"]) for group in spec["workerGroupSpecs"]
    ]


def group(spec: dict, name: str) -> dict:
    return next(g for g in spec["workerGroupSpecs"] if g["groupName"] == name)


MANIFESTS = ["raycluster.yaml", "rayjob.yaml"]


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_matches_the_kuberay_schema(name):
    validate(load(name))


@pytest.mark.parametrize(
    "path, typo",
    [
        (("spec",), "shutdownAfterJobFinish"),
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


def test_a_wrong_value_type_is_rejected():
    manifest = copy.deepcopy(load("raycluster.yaml"))
    manifest["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "sixteen"
    with pytest.raises(jsonschema.ValidationError):
        validate(manifest)


@pytest.mark.parametrize("name", MANIFESTS)
def test_head_takes_no_work_and_workers_autoscale(name):
    spec = cluster_spec(load(name))
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert spec["enableInTreeAutoscaling"] is True
    for worker in spec["workerGroupSpecs"]:
        assert 0 <= worker["minReplicas"] <= worker.get("replicas", 0) <= worker["maxReplicas"]
        assert worker["maxReplicas"] > worker["minReplicas"], f"{worker['groupName']} cannot scale"


@pytest.mark.parametrize("name", MANIFESTS)
def test_gpu_group_asks_for_gpus_and_tolerates_gpu_nodes_cpu_group_does_not(name):
    spec = cluster_spec(load(name))
    gpu_container = group(spec, "gpu-training")["template"]["spec"]["containers"][0]
    limits, requests = gpu_container["resources"]["limits"], gpu_container["resources"]["requests"]
    assert int(limits["nvidia.com/gpu"]) >= 1 and requests["nvidia.com/gpu"] == limits["nvidia.com/gpu"]
    tolerations = group(spec, "gpu-training")["template"]["spec"]["tolerations"]
    assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in tolerations)
    cpu_pod = group(spec, "cpu-synthesis")["template"]["spec"]
    assert "nvidia.com/gpu" not in cpu_pod["containers"][0]["resources"]["limits"]
    assert "tolerations" not in cpu_pod


@pytest.mark.parametrize("name", MANIFESTS)
def test_every_pod_has_an_in_memory_dev_shm_and_the_s3_secret(name):
    spec = cluster_spec(load(name))
    for group_name, pod in pods(spec):
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        for container in pod["containers"]:
            shm = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
            assert len(shm) == 1, f"{group_name}: /dev/shm is not mounted"
            assert volumes[shm[0]["name"]]["emptyDir"]["medium"] == "Memory", f"{group_name}: /dev/shm not in memory"
            secrets = [source["secretRef"]["name"] for source in container.get("envFrom", []) if "secretRef" in source]
            assert S3_SECRET in secrets, f"{group_name}: S3 credentials secret not referenced"
            memory_gi = float(container["resources"]["limits"]["memory"].removesuffix("Gi"))
            shm_gi = float(volumes[shm[0]["name"]]["emptyDir"]["sizeLimit"].removesuffix("Gi"))
            assert shm_gi < memory_gi, f"{group_name}: /dev/shm larger than the container's memory"


def test_the_secret_example_defines_what_the_manifests_reference():
    secrets = {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all((K8S / "secret.example.yaml").read_text())}
    assert AWS_KEYS <= set(secrets[S3_SECRET]["stringData"])
    for name in MANIFESTS:
        auth = cluster_spec(load(name))["authOptions"]
        assert auth["mode"] == "token" and "auth_token" in secrets[auth["secretName"]]["stringData"]


@pytest.mark.parametrize("name", MANIFESTS)
def test_image_tag_matches_ray_version_everywhere(name):
    spec = cluster_spec(load(name))
    version = spec["rayVersion"]
    dockerfile = (K8S / "Dockerfile").read_text()
    assert re.search(rf"^ARG RAY_VERSION={re.escape(version)}$", dockerfile, re.M)
    assert "FROM rayproject/ray:${RAY_VERSION}-py311" in dockerfile
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f"==" + version in re.search(r'"ray\[[^\]]*\]==[^"]+"', pyproject).group(0)
    for group_name, pod in pods(spec):
        for container in pod["containers"]:
            tag = container["image"].rsplit(":", 1)[1]
            assert tag.split("-")[0] == version, f"{group_name}: image tag {tag} does not match rayVersion {version}"


def test_rayjob_shuts_down_and_runs_the_pipeline_with_valid_arguments():
    from lightwork.jobs import pipeline

    job = load("rayjob.yaml")["spec"]
    assert job["shutdownAfterJobFinishes"] is True
    command = shlex.split(job["entrypoint"])
    assert command[:2] == ["python", "/home/ray/lightwork/jobs/pipeline.py"]
    args = pipeline.build_parser().parse_args(command[2:])
    for uri in (args.data, args.test_data, args.storage):
        assert uri.startswith("s3://"), f"{uri}: the job's data and storage must be on S3"
