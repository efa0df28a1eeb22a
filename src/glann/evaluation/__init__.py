"""Evaluation: the evaluator network, metrics, scoring samples and snapshots, the summary."""
