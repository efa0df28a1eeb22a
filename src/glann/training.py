"""Pieces every training loop shares: the in-memory data, the per-epoch log."""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path

import torch

from .atomic import write_text
from .datasets import load_prepared

log = logging.getLogger(__name__)


def load_train_images(data_dir, device: torch.device) -> torch.Tensor:
    """The prepared training split as uint8 NHWC on the job's device (converted per batch)."""
    images, _ = load_prepared(data_dir, "train")
    return torch.from_numpy(images).to(device)


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


def epoch_batches(n: int, batch_size: int, gen: torch.Generator, device, drop_last: bool = False):
    """Shuffled index batches for one epoch, drawn from ``gen`` (saved in checkpoints)."""
    perm = torch.randperm(n, generator=gen).to(device)
    stop = n - (n % batch_size) if drop_last and n >= batch_size else n
    return [perm[i: i + batch_size] for i in range(0, stop, batch_size)]
