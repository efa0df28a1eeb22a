"""What the scoring steps take: what a run is scored against, and how.

:func:`glann.evaluation.scoring.real_stats` writes a :class:`Reference`'s statistics;
:func:`glann.evaluation.scoring.evaluate` and :func:`glann.evaluation.snapshots.score_snapshots`
score against one, as a :class:`Scoring` says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Reference:
    """What a run is scored against: the prepared data, the evaluator, and the real statistics
    :func:`~glann.evaluation.scoring.real_stats` writes: ``stats`` in evaluator features (the test split's for the table;
    a snapshot curve takes the validation split's), ``inception`` in Inception features (None:
    not scored) and ``val`` the validation split's in evaluator features (None: none carved)."""

    data_dir: Any
    evaluator: Any
    stats: Any
    inception: Any = None
    val: Any = None


@dataclass(frozen=True)
class Scoring:
    """How a run is scored: the step's settings (``fid`` and ``eval`` for :func:`~glann.evaluation.scoring.evaluate`; the
    ``snapshots`` section for glann.evaluation.snapshots), the device and the seed of every draw."""

    cfg: dict = field(default_factory=dict)
    device: Any = "cpu"
    seed: int = 0
