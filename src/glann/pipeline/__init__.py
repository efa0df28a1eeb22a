"""The pipeline's plumbing: the `glann` command line, config checks, code hashes, preflight."""
