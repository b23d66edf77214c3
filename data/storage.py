"""Storage addressed by URI: a local path and `s3://bucket/key` behave the same everywhere.

Endpoint, credentials and region come from the standard AWS variables (`AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`). s3fs honours them itself;
pyarrow's S3 filesystem does not read `AWS_ENDPOINT_URL`, so it is passed explicitly here.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

import fsspec


def normalise(uri: str) -> str:
    """The one form of a path argument: `s3://...` (any scheme but `file`) unchanged; a local path
    (relative, `~`, or `file://`) made absolute, so that Ray workers and trial drivers, which run in
    other working directories, find it. Applied once, where a path enters (CLI, config)."""
    text = str(uri)
    if is_remote(text):
        return text
    if text.startswith("file://"):
        text = urlparse(text).path
    return os.path.abspath(os.path.expanduser(text))


def is_remote(uri: str) -> bool:
    """True for URIs with a scheme other than `file` (e.g. `s3://`)."""
    scheme = urlparse(str(uri)).scheme
    return len(scheme) > 1 and scheme != "file"


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for `uri` and the path inside it (no scheme)."""
    fs, path = fsspec.core.url_to_fs(str(uri))
    return fs, path


def join(base: str, *parts: str) -> str:
    """Join URI parts with '/' (a local base keeps its OS path form)."""
    out = str(base).rstrip("/")
    for part in parts:
        out = f"{out}/{str(part).strip('/')}"
    return out


def read_bytes(uri: str) -> bytes:
    """The whole object at `uri`."""
    fs, path = filesystem(uri)
    return fs.cat_file(path)


def write_bytes(uri: str, payload: bytes) -> None:
    """Write `payload` to `uri`, creating parent folders where the storage has them."""
    fs, path = filesystem(uri)
    parent = path.rsplit("/", 1)[0]
    if parent and not is_remote(uri):
        fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "wb") as handle:
        handle.write(payload)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def remove(uri: str) -> None:
    """Delete the object or folder (recursively) at `uri`; nothing there is fine."""
    fs, path = filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def pyarrow_filesystem(uri: str):
    """A `pyarrow.fs.FileSystem` and path for `uri`, for Ray Data and Parquet I/O."""
    import pyarrow.fs as pafs

    if urlparse(str(uri)).scheme == "s3":
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        kwargs = {}
        if endpoint:
            parsed = urlparse(endpoint)
            kwargs = {"endpoint_override": parsed.netloc or parsed.path, "scheme": parsed.scheme or "https"}
        region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
        if region:
            kwargs["region"] = region
        # Credentials come from the AWS chain of whichever process uses the filesystem: given
        # explicitly, they would travel inside every pickled copy (Tune's experiment state, actors' arguments).
        fs = pafs.S3FileSystem(**kwargs)
        return fs, str(uri)[len("s3://") :]
    return pafs.LocalFileSystem(), urlparse(str(uri)).path if str(uri).startswith("file://") else str(uri)
