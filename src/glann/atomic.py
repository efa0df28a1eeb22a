"""Atomic file writes: write to a temporary file in the same folder, then rename.

A crash (kill -9, power loss, full disk) during a write leaves at most a
``.tmp-*`` file behind, never a complete-looking partial output, and never
touches an earlier file of the same name until the new one is whole.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import GlannError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success."""
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
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise GlannError(
            f"cannot write {path}: {exc.strerror or exc}. Earlier outputs are untouched; "
            "free disk space or fix the folder's permissions and rerun."
        ) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


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


def save_with(path, writer: Callable[[Path], None]) -> None:
    """Atomically write ``path`` with ``writer(tmp_path)`` (e.g. an image saver)."""
    with atomic_path(path) as tmp:
        writer(tmp)
