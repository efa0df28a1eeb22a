"""Device selection, seeding, mixed precision and resumable checkpoints.

A checkpoint is one dict (nanoGPT style): model and optimiser states, epoch,
RNG states and the job's config; it is written atomically after every epoch to
``<output>.resume`` and removed once the final output is written, so a killed
job resumes from its last finished epoch and ends with the same weights as an
uninterrupted run (on CPU; CUDA kernels are not bitwise deterministic unless
``deterministic: true``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from pathlib import Path

import numpy as np
import torch

from glann.atomic import load_torch, remove, torch_save
from glann.errors import GlannError

log = logging.getLogger(__name__)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GlannError("device: cuda was asked for but no CUDA GPU is visible; use device: auto or cpu.")
    return torch.device(name)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A tensor drawn on the CPU (from a job's generator) moved to ``device`` without stalling it.

    On CUDA a plain ``.to(device)`` from pageable memory makes PyTorch wait for the stream to
    drain, once per call: inside a step loop that is a host synchronisation per step, which keeps
    a GPU idle on networks this small. Pinned memory and ``non_blocking`` queue the copy instead
    (the caching host allocator keeps the pinned block alive until the copy has run). The values
    are the same, bit for bit; on the CPU the tensor is returned as it is."""
    device = torch.device(device)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def setup_torch(threads: int | None = None, deterministic: bool = False, seed: int = 0) -> None:
    """Use the cores the job was given, seed every RNG, optionally force determinism.

    ``threads`` caps torch's threads and the BLAS/OpenMP pools numpy and scipy use (the
    covariances and matrix square roots of every Fréchet distance): a job then computes the
    same metrics under Snakemake (which sets ``OMP_NUM_THREADS`` and the like to the job's
    threads) as when its command is run by hand, where those pools would take every core and
    round float64 sums in another order.
    """
    if threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(int(threads))
        threadpool_limits(limits=int(threads))
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic and torch.cuda.is_available():
        # CPU kernels are deterministic already; the switch only matters for CUDA (and
        # importing it costs seconds per job: it pulls in torch._dynamo).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def autocast(device: torch.device, amp: str = "auto"):
    """Mixed precision for a forward pass. ``auto`` = what measured fastest for these networks:
    fp32 on every device, with TF32 matrix products on CUDA (``setup_torch``): bf16
    autocast was 7-85% slower per epoch on an H200 for every model of the pipeline (benchmarks/README.md,
    section g: small networks whose step rate is bound by kernel launches, so the casts cost more
    than the bf16 units save). ``bf16`` = bf16 autocast (on CPU mostly to exercise the path);
    ``off`` = fp32.

    bf16 keeps fp32's exponent range, so no loss scaling is needed; fp16 is not offered
    (it would need a GradScaler in every trainer). Losses are computed outside autocast.
    """
    if amp in ("off", "auto", False, None):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def rng_state(gen: torch.Generator | None = None) -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if gen is not None:
        state["generator"] = gen.get_state()
    return state


def set_rng_state(state: dict, gen: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if gen is not None and "generator" in state:
        gen.set_state(state["generator"])


@contextlib.contextmanager
def training_lock(output):
    """Hold an exclusive lock on ``output`` for a whole training job: one model, one trainer.

    ``fcntl.flock`` on ``.<name>.lock`` beside the output; the OS releases it when the
    process exits or dies, so a crash never leaves a stale lock. A second process asked
    to train the same output stops at once with one line naming the first one.
    """
    import fcntl
    import socket

    output = Path(output)
    lock = output.with_name(f".{output.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fh = open(lock, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        owner = fh.read().strip() or "another process"
        fh.close()
        raise GlannError(
            f"{output} is being trained right now by process {owner} (lock {lock}): wait for it to "
            "finish, or stop it, then rerun snakemake. Two processes never train one model.") from None
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()} on {socket.gethostname()}")
        fh.flush()
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


class Checkpointer:
    """Per-epoch resume file next to a job's final output."""

    def __init__(self, output: str | os.PathLike):
        self.output = Path(output)
        self.path = self.output.with_name(self.output.name + ".resume")

    def load(self):
        if not self.path.exists():
            return None
        state = load_torch(self.path, "delete it and rerun snakemake (training then restarts from epoch 1)")
        log.info("resuming from %s (epoch %d finished)", self.path, state["epoch"])
        return state

    def save(self, state: dict) -> None:
        torch_save(self.path, state)

    def finish(self, final: dict) -> None:
        torch_save(self.output, final)
        remove(self.path)
