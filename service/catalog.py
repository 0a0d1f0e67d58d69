"""Stored building blocks of experiments: traces (uploaded files), the plugin registry, and the
validation of host and VM template documents. The caller commits."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Optional, Union

import numpy as np

from sqlalchemy import select
from sqlalchemy.orm import Session

from .engine.traces import GZIP_MAGIC, NPY_MAGIC, TraceError, load_trace, trace_stats
from .models import Trace
from .scenario import HostSchema, ScenarioValidationError, VMSchema, flatten_errors
from .settings import Settings, get_settings

CHUNK = 1 << 20


class TraceUploadError(ValueError):
    """An upload that is not a usable trace, or too large."""


class TraceTooLarge(TraceUploadError):
    """An upload over ``settings.max_trace_bytes``."""


def store_trace(session: Session, name: str, data: Union[bytes, IO[bytes]],
                settings: Optional[Settings] = None,
                analyse: Optional[Callable[[np.ndarray], dict]] = None) -> Trace:
    """Store an uploaded trace under the trace folder, named by its SHA-256, and record its
    checksum, size, format, length and footprint, and ``analyse(page ids)`` as its analysis when
    given (on the ids read here, so that a large upload is parsed once). The same content uploaded
    twice is stored once: the existing row is returned. Raises TraceUploadError for a file over
    ``settings.max_trace_bytes`` (TraceTooLarge) or one ``service.engine.traces.load_trace`` cannot read."""
    settings = settings or get_settings()
    settings.trace_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp = tempfile.mkstemp(dir=settings.trace_dir, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in _chunks(data):
                size += len(chunk)
                if size > settings.max_trace_bytes:
                    raise TraceTooLarge(f"trace is larger than the limit of {settings.max_trace_bytes} bytes")
                digest.update(chunk)
                out.write(chunk)
        sha = digest.hexdigest()
        existing = session.scalar(select(Trace).where(Trace.sha256 == sha))
        if existing is not None and (settings.trace_dir / existing.path).is_file():
            return existing
        try:
            ids = load_trace(tmp)
        except TraceError as exc:
            raise TraceUploadError(f"{name}: {exc.message}" + (f" (line {exc.line})" if exc.line else "")) from None
        stats = trace_stats(ids)
        analysis = analyse(ids) if analyse is not None and (existing is None or existing.analysis is None) else None
        del ids
        with open(tmp, "rb") as f:
            head = f.read(8)
        os.replace(tmp, settings.trace_dir / sha)
        tmp = None
        if existing is not None:      # the row outlived its file: the file is back
            if analysis is not None:
                existing.analysis = analysis
            return existing
        trace = Trace(name=name, sha256=sha, path=sha, format=_format(head), size_bytes=size,
                      length=stats["refs"], footprint_pages=stats["footprint"], analysis=analysis)
        session.add(trace)
        session.flush()
        return trace
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


class TraceInUse(ValueError):
    """A trace that experiments still use cannot be deleted."""


def delete_trace(session: Session, trace: Trace, settings: Optional[Settings] = None) -> None:
    """Delete a trace nobody uses, row and file. Raises TraceInUse otherwise."""
    session.refresh(trace)
    if trace.ref_count > 0:
        raise TraceInUse(f"trace {trace.id} ({trace.name}) is used by {trace.ref_count} experiment(s)")
    path = trace_file(trace, settings)
    session.delete(trace)
    session.flush()
    path.unlink(missing_ok=True)


def trace_file(trace: Trace, settings: Optional[Settings] = None) -> Path:
    return (settings or get_settings()).trace_dir / trace.path


def _chunks(data: Union[bytes, IO[bytes]]):
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data)
        for start in range(0, len(view), CHUNK):
            yield bytes(view[start:start + CHUNK])
        return
    while True:
        chunk = data.read(CHUNK)
        if not chunk:
            return
        yield chunk


def _format(head: bytes) -> str:
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(NPY_MAGIC):
        return "npy"
    return "text"


def validate_host_spec(spec: Any) -> dict[str, Any]:
    """Check a host document (the scenario format's ``host`` object); return it unchanged.
    Raises ScenarioValidationError with paths relative to the host (``devices.fast.read_us``)."""
    if not isinstance(spec, dict):
        raise ScenarioValidationError({"(document)": ["a host must be a JSON object"]})
    errors = HostSchema().validate(spec)
    if errors:
        raise ScenarioValidationError(flatten_errors(errors))
    return spec


def validate_vm_template_spec(spec: Any) -> dict[str, Any]:
    """Check a VM template (the scenario format's VM object; its ``name`` is optional, since
    each experiment names its VMs); return it unchanged."""
    if not isinstance(spec, dict):
        raise ScenarioValidationError({"(document)": ["a VM template must be a JSON object"]})
    errors = VMSchema().validate({"name": "template", **spec})
    if errors:
        raise ScenarioValidationError(flatten_errors(errors))
    return spec
