"""Names used outside Python files vulture reads (Snakefile rules, torch hooks): `vulture` in CI."""
from glann.pipeline.codehash import code_hash
from glann.pipeline.config import cuda_visible, yaml_error
from glann.pipeline.watchdog import export_snakemake_pid
from glann.tracking.tracker import export_tracking
from glann.methods.registry import Method
from glann.pipeline.preflight import preflight_problems
from glann.pipeline.records import compatible, read_key_config, run_key
from glann.tracking.invocation import on_end, on_start

_ = object()  # stands for any object: this file is read by vulture, never run

code_hash, on_start, on_end, cuda_visible, export_tracking, export_snakemake_pid, preflight_problems  # workflow/rules/common.smk
yaml_error  # Snakefile
compatible, read_key_config, run_key  # common.smk (run records)
Method.v1_generator, Method.mem_mb, Method.checkpoint_paths, Method.loss_csv_paths, Method.snapshot_path, Method.snapshot_fixed_paths  # common.smk
_.forward  # torch modules
_.benchmark, _.allow_tf32  # torch.backends switches
_.params, _.metrics, _.tags, _.dataset, _.artifact  # tracking backends, called through Tracker._call
pytest_collection_modifyitems  # pytest hook (tests/conftest.py)
