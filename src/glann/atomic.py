"""Atomic, verifiable file writes: write to a temporary file in the same folder, then rename.

A crash (kill -9, power loss, full disk) during a write leaves at most a
``.tmp-*`` file behind, never a complete-looking partial output, and never
touches an earlier file of the same name until the new one is whole.

Every file written here gets an integrity record beside it, ``.<name>.sha256``
(size and sha256, JSON; while a file is being replaced, the record names the previous
version too, so a kill between the record's write and the file's rename leaves a file
that verifies). Steps read what earlier steps wrote through
:func:`verified` (or :func:`load_torch` / :func:`load_npz`), so a truncated,
corrupted or foreign file stops the step with one line that names the file and
the fix, before any work, instead of a traceback; Snakemake cannot notice such a
file itself when its mtime is fine.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from glann.errors import CorruptFileError, GlannError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, record: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    ``record``: also write the integrity record (off for end products no step reads,
    e.g. the summary's DVC plot folders, where an extra file would be read as a plot)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise GlannError(
            f"cannot write {path}: {exc.strerror or exc}. Check that the folder "
            "exists, is writable and the disk is not full."
        ) from exc
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates 0600; give the output the mode a plain open() would
        # (readable by the group on a shared cluster, by DVC's cache, ...).
        os.chmod(tmp, 0o666 & ~_umask())
        digest = {"size": tmp.stat().st_size, "sha256": sha256_of(tmp)} if record else None
        if digest:  # first the record of both versions: a kill at any point leaves a file it accepts
            _write_record(path, json.dumps({**digest, "previous": _current_digest(path)}))
        os.replace(tmp, path)
        if digest:
            _write_record(path, json.dumps(digest))
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise GlannError(
            f"cannot write {path}: {exc.strerror or exc}. Earlier outputs are untouched; "
            "free disk space or fix the folder's permissions and rerun."
        ) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path, data: bytes, record: bool = True) -> None:
    with atomic_path(path, record) as tmp:
        tmp.write_bytes(data)


def write_text(path, text: str, record: bool = True) -> None:
    write_bytes(path, text.encode("utf-8"), record)


def write_json(path, obj: Any, record: bool = True) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n", record)


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def save_npz(path, **arrays) -> None:
    import numpy as np

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_bytes(path, buf.getvalue())


def torch_save(path, obj: Any) -> None:
    import torch

    # Serialise in memory first: torch's own file writer reports a full disk as a
    # RuntimeError; through write_bytes it is an OSError with a clear message.
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getbuffer())


def save_with(path, writer: Callable[[Path], None], record: bool = True) -> None:
    """Atomically write ``path`` with ``writer(tmp_path)`` (e.g. an image saver)."""
    with atomic_path(path, record) as tmp:
        writer(tmp)


# --------------------------------------------------------------------------- integrity records
def integrity_path(path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.sha256")


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _current_digest(path: Path) -> dict | None:
    """Size and sha256 that the record of ``path`` gives for the file there now, if any."""
    if not path.is_file():
        return None
    try:
        rec = json.loads(integrity_path(path).read_text())
        return {"size": rec["size"], "sha256": rec["sha256"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_record(path: Path, record: str) -> None:
    rec = integrity_path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{rec.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(record)
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, rec)


def remove(path) -> None:
    """Delete a file written here and its integrity record."""
    Path(path).unlink(missing_ok=True)
    integrity_path(path).unlink(missing_ok=True)


def default_fix(path) -> str:
    # Snakemake does not rebuild a missing intermediate file whose dependents look up to date:
    # ask for the file itself, then the plain run redoes what depends on it (mtime).
    return (f"delete it, rebuild it with `snakemake {path} --cores all`, then run `snakemake --cores all` "
            "to update what depends on it")


def corrupt(path, fix: str | None = None) -> CorruptFileError:
    return CorruptFileError(f"{path} is truncated or corrupt: {fix or default_fix(path)}.")


def verified(path, fix: str | None = None) -> Path:
    """``path`` if it is exactly what this pipeline wrote (size and sha256 of its record)."""
    path = Path(path)
    if not path.is_file():
        raise GlannError(f"{path} is missing: rerun snakemake, which will rebuild it.")
    try:
        want = json.loads(integrity_path(path).read_text())
    except (OSError, ValueError):
        raise CorruptFileError(
            f"{path} has no integrity record ({integrity_path(path).name}): it was not written by this "
            f"pipeline (or by an older version of it): {fix or default_fix(path)}.") from None
    # a record may also name the file's previous version: a kill between the record's write and
    # the rename that replaces the file leaves that version in place (atomic_path)
    versions = [v for v in (want, want.get("previous")) if isinstance(v, dict)]
    size = path.stat().st_size
    candidates = [v for v in versions if v.get("size") == size]
    if not candidates or sha256_of(path) not in {v.get("sha256") for v in candidates}:
        raise corrupt(path, fix)
    return path


def load_torch(path, fix: str | None = None):
    """torch.load of a verified file (CPU tensors)."""
    import torch

    verified(path, fix)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise corrupt(path, fix) from exc


@contextlib.contextmanager
def load_npz(path, fix: str | None = None):
    """np.load of a verified file, as a context manager."""
    import numpy as np

    verified(path, fix)
    try:
        z = np.load(path)
    except Exception as exc:
        raise corrupt(path, fix) from exc
    with z:
        yield z
