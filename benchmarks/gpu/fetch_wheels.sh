#!/bin/bash
# Fetch the wheels the GPU check carries into .whl/ (ignored by git), on a machine with PyPI:
#   bash benchmarks/gpu/fetch_wheels.sh
# Python 3.12, manylinux x86-64, no dependencies resolved here: wheels.txt is the whole closure
# (tests/test_gpu_check.py checks it). connection_pool is published as a source archive only:
# its (pure-Python) wheel is built here.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
grep -v '^#' benchmarks/gpu/wheels.txt | grep -v '^connection-pool==' > .whl/.list
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 \
  --platform manylinux1_x86_64 -d .whl -r .whl/.list
python3 -m pip wheel -q --no-deps -w .whl "$(grep '^connection-pool==' benchmarks/gpu/wheels.txt | sed 's/-/_/')"
rm .whl/.list
du -sh .whl
