"""The one training loop every method uses, and the pieces it needs.

``fit`` reads top to bottom like nanoGPT's loop: resume from ``<output>.resume``
if a killed run left one, then for each epoch run the method's step, check the
watched losses are finite (a non-finite one either stops with a message or, for
GANs, rolls the generator back to the last finished epoch), log the epoch (log
line, loss CSV for DVC plots, MLflow), and checkpoint atomically; at the end
write the final checkpoint, which always carries ``kind``, ``seed``, ``epochs``,
``config``, ``history``, ``diverged`` and ``diverged_epoch`` beside the
method's own tensors. A method supplies only ``step(epoch, poison) -> metrics``
(``poison``: the fault-injection switch, multiply the loss by NaN) and the dict
of objects (modules, optimisers, :class:`Slot`) its resume state is made of.
"""

from __future__ import annotations

import copy
import csv
import io
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from glann.atomic import torch_save, write_text
from glann.data.datasets import load_prepared
from glann.errors import DivergedError
from glann.runtime import Checkpointer, rng_state, set_rng_state, to_device, training_lock

log = logging.getLogger(__name__)


@dataclass
class TrainContext:
    """Where and how one training job runs: what every trainer gets besides its data and config.

    ``glann <step>`` builds one per job (glann.pipeline.cli); a test or a notebook builds its own,
    e.g. ``TrainContext("glo.pt", seed=1)``. The trainer reads ``seed``, ``device`` and ``amp``;
    :func:`fit` the rest.
    """

    out: Any                       # the final checkpoint; a killed run's ``<out>.resume`` sits beside it
    seed: int = 0                  # fixes init, data order and noise
    device: Any = "cpu"            # a torch.device or its name
    csv: Any = None                # per-epoch metrics as CSV (DVC plots); None: none written
    tracker: Any = None            # glann.tracking.tracker.Tracker (MLflow), or None
    amp: str = "auto"              # runtime.amp: mixed precision (glann.runtime.autocast)
    fault: dict | None = None      # fault injection: {"nan_at_epoch": k}
    snapshots: int = 0             # generator snapshots kept over the budget (quality vs compute)
    snapshot_path: Any = None      # where they go (always written when set)

    def __post_init__(self):
        self.device = torch.device(self.device)


def load_train_images(data_dir, device: torch.device) -> torch.Tensor:
    """The prepared training split as uint8 NHWC on the job's device (converted per batch)."""
    images, _ = load_prepared(data_dir, "train")
    return torch.from_numpy(images).to(device)


def seeded(seed: int) -> torch.Generator:
    """Seed torch's global RNG (weight init) and return the job's own generator (data, noise)."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


class Slot:
    """A tensor (or None) that belongs to a trainer's resumable state (GLO's codes, IMLE's matches)."""

    def __init__(self, value: torch.Tensor | None = None, device=None):
        self.value = value
        self.device = device if device is not None else (value.device if value is not None else None)

    def state_dict(self) -> dict:
        return {"value": None if self.value is None else self.value.detach().cpu()}

    def load_state_dict(self, state: dict) -> None:
        saved = state["value"]
        if saved is None:
            self.value = None
        elif isinstance(self.value, torch.Tensor) and self.value.shape == saved.shape:
            self.value.data.copy_(saved)  # in place: an optimiser may hold this tensor
        else:
            self.value = saved.to(self.device) if self.device is not None else saved


class EpochLog:
    """Per-epoch metrics: one log line, a row in a CSV (DVC plots) and MLflow metrics."""

    def __init__(self, csv_path, tracker=None, rows: list | None = None):
        self.csv_path = Path(csv_path) if csv_path else None
        self.tracker = tracker
        self.rows = list(rows or [])
        self._t0 = time.perf_counter()

    def start_epoch(self):
        self._t0 = time.perf_counter()

    def log(self, epoch: int, **metrics) -> dict:
        row = {"epoch": epoch, **{k: float(v) for k, v in metrics.items()},
               "seconds": time.perf_counter() - self._t0}
        self.rows.append(row)
        log.info("epoch %d: %s", epoch, "  ".join(f"{k}={v:.5g}" for k, v in row.items() if k != "epoch"))
        if self.tracker is not None:
            self.tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
        self.write()
        return row

    def write(self):
        if not self.csv_path:
            return
        keys = list(dict.fromkeys(k for r in self.rows for k in r)) or ["epoch"]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(self.rows)
        write_text(self.csv_path, buf.getvalue())


def snapshot_epochs(epochs: int, count: int) -> list[int]:
    """The epochs after which ``count`` snapshots are kept, evenly spaced over ``epochs`` (the last
    is always the final epoch; images per epoch are constant, so this is even in images too)."""
    if count <= 0:
        return []
    return sorted({max(1, round(k * epochs / count)) for k in range(1, count + 1)})


def _cpu_copy(obj):
    """A detached CPU copy of a (nested) dict of tensors: a snapshot must not follow training."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


def _snapshot(state: dict, gen: torch.Generator, final: Callable[[], dict]) -> dict:
    """``final()`` now, without touching training: final() may draw noise (IMLE's BatchNorm
    recalibration), so every state object and both RNGs are put back afterwards. Training with
    snapshots on gives the same model as with them off, and the last snapshot is the final model."""
    before = {k: copy.deepcopy(o.state_dict()) for k, o in state.items()}
    rng = rng_state(gen)
    try:
        return _cpu_copy(final())
    finally:
        for k, o in state.items():
            o.load_state_dict(before[k])
        set_rng_state(rng, gen)


@dataclass
class Loop:
    """What a trainer hands to :func:`fit`: its task name and kind, its config, the objects its
    resume state is made of, its generator, its epoch step and its final tensors, and the
    divergence policy."""

    task: str                          # names the progress bar and messages, e.g. "train_glo"
    kind: str                          # the final checkpoint's ``kind``
    cfg: dict                          # the method's config section (``epochs`` is read)
    state: dict                        # name -> object with state_dict/load_state_dict
    gen: torch.Generator               # the job's generator (data order, noise), saved with the state
    step: Callable[[int, bool], dict]  # step(epoch, poison) -> the epoch's metrics
    final: Callable[[], dict]          # the method's tensors for the final checkpoint
    watch: tuple = ("loss",)           # metrics that must stay finite
    hint: str = ""                     # appended to the message when training stops on a non-finite loss
    rollback: str | None = None        # a key of ``state`` to roll back instead of stopping


def fit(loop: Loop, ctx: TrainContext) -> dict:
    """Train for ``cfg['epochs']`` epochs with resume, logging, checkpoints and the divergence policy.

    ``loop.state``: name -> object with ``state_dict``/``load_state_dict`` (saved every epoch to
    ``ctx.out``'s resume file, restored on resume with ``gen``'s and the global RNG states).
    ``loop.watch``: metric keys that must stay finite. ``loop.rollback``: None = a non-finite loss raises
    DivergedError (the last finished epoch stays in the resume file); a key of ``state`` = restore
    that object's weights of the last finished epoch, record ``diverged`` and stop training.
    ``loop.final()`` returns the method's tensors for the final checkpoint. Compute is recorded:
    each epoch's ``seconds`` and ``images`` (training examples through a backward pass, as
    the step reports them) go to ``ctx.csv`` and ``ctx.tracker``; the final checkpoint carries
    ``train_seconds``, ``images_processed`` and ``device``.

    ``ctx.snapshots``: keep that many copies of ``loop.final()`` over the budget (:func:`snapshot_epochs`),
    each with the training seconds and images processed so far, written to ``ctx.snapshot_path``
    (always written when given: an empty list when ``snapshots`` is 0). They are what the
    quality-vs-compute curves score (glann.evaluation.snapshots).

    The final checkpoint is written by :func:`for_storage`: the generator's floating-point weights
    in float16, half the bytes (the networks that load them are float32, and ``load_state_dict``
    casts back).
    """
    task, kind, cfg, state, gen, step, final = (loop.task, loop.kind, loop.cfg, loop.state, loop.gen,
                                                 loop.step, loop.final)
    watch, hint, rollback = loop.watch, loop.hint, loop.rollback
    epochs, tracker, fault = cfg["epochs"], ctx.tracker, ctx.fault
    with training_lock(ctx.out):
        ckpt = Checkpointer(ctx.out)
        saved = ckpt.load()
        start, history, kept = 0, [], []
        marks = set(snapshot_epochs(epochs, ctx.snapshots))
        if saved is not None:
            for name, obj in state.items():
                obj.load_state_dict(saved["state"][name])
            set_rng_state(saved["rng"], gen)
            start, history, kept = saved["epoch"], saved["history"], saved.get("snapshots", [])
            if tracker is not None:  # one model, one history: the earlier epochs, and the run they came from
                if saved.get("run_id"):
                    tracker.set_tags({"glann.resumed_from_run": saved["run_id"]})
                for row in history:
                    tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
        elog = EpochLog(ctx.csv, tracker, history)
        last_good = copy.deepcopy(state[rollback].state_dict()) if rollback else None
        diverged_at = None

        for epoch in tqdm(range(start + 1, epochs + 1), desc=task, initial=start, total=epochs, disable=None):
            elog.start_epoch()
            # the step's sums stay on the device until here: one read per epoch
            metrics = {k: float(v) if isinstance(v, torch.Tensor) else v
                       for k, v in step(epoch, bool(fault) and fault.get("nan_at_epoch") == epoch).items()}
            bad = [k for k in watch if not math.isfinite(metrics[k])]
            if bad and rollback is None:
                raise DivergedError(f"{task}: loss became {metrics[bad[0]]} in epoch {epoch}. {hint}", epoch)
            if bad:
                diverged_at = epoch
                log.warning("%s diverged in epoch %d (%s): keeping the weights of epoch %d",
                            task, epoch, metrics, epoch - 1)
                state[rollback].load_state_dict(last_good)
                if tracker is not None:
                    tracker.log_metrics({"diverged": 1.0, "diverged_epoch": epoch}, step=epoch)
                break
            if rollback:
                last_good = copy.deepcopy(state[rollback].state_dict())
            elog.log(epoch, **metrics)
            if epoch in marks:
                kept.append({"epoch": epoch, "train_seconds": sum(r["seconds"] for r in elog.rows),
                             "images_processed": int(sum(r.get("images", 0) for r in elog.rows)),
                             **_snapshot(state, gen, final)})
            ckpt.save({"epoch": epoch, "state": {k: o.state_dict() for k, o in state.items()},
                       "rng": rng_state(gen), "history": elog.rows, "config": cfg, "snapshots": kept,
                       "run_id": getattr(tracker, "run_id", None)})

        result = {"kind": kind, "seed": ctx.seed, "epochs": epochs, "config": cfg, "history": elog.rows,
                  "diverged": diverged_at is not None, "diverged_epoch": diverged_at,
                  "train_seconds": sum(r["seconds"] for r in elog.rows),
                  "images_processed": int(sum(r.get("images", 0) for r in elog.rows)), "device": str(ctx.device),
                  **final()}
        elog.write()  # the CSV exists even when the first epoch diverged
        if ctx.snapshot_path:
            torch_save(ctx.snapshot_path, {k: result[k] for k in ("kind", "seed", "epochs", "config", "diverged",
                                                               "diverged_epoch", "device")} | {"snapshots": kept})
        ckpt.finish(for_storage(result))
        return result


STORED_HALF = ("generator",)  # final-checkpoint entries (state dicts) kept in float16


def for_storage(result: dict) -> dict:
    """The final checkpoint as written: every float32 tensor of the ``STORED_HALF`` state dicts in
    float16 (half the bytes on disk; a generator's outputs move by about 1e-3 of a grey level at
    most, tests/test_trainers.py). Everything else (GLO's codes, counters, history) as it is."""
    out = dict(result)
    for key in STORED_HALF:
        if isinstance(result.get(key), dict):
            out[key] = {k: v.half() if torch.is_tensor(v) and v.dtype == torch.float32 else v
                        for k, v in result[key].items()}
    return out


def descend(loss: torch.Tensor, poison: bool, *optimisers) -> torch.Tensor:
    """One gradient step of every optimiser on ``loss``; returns its value, detached, as a float64
    0-d tensor on the loss's device. ``poison`` (fault injection) makes the loss NaN first, as a
    diverging run would.

    No host synchronisation: a trainer sums these on the device and reads the sum once per epoch
    (``fit`` turns the step's metrics into floats), since a ``.item()`` per step stalls a GPU's
    queue on networks this small. The float64 sum of ``value * batch`` is the same number, bit for
    bit, as the Python float sum of ``loss.item() * batch`` it replaces."""
    if poison:
        loss = loss * float("nan")
    for opt in optimisers:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    for opt in optimisers:
        opt.step()
    return loss.detach().double()


def epoch_batches(n: int, batch_size: int, gen: torch.Generator, device, drop_last: bool = False):
    """Shuffled index batches for one epoch, drawn from ``gen`` (saved in checkpoints)."""
    perm = to_device(torch.randperm(n, generator=gen), device)
    stop = n - (n % batch_size) if drop_last and n >= batch_size else n
    return [perm[i: i + batch_size] for i in range(0, stop, batch_size)]
