#!/usr/bin/env bash
# Downloads into .whl/ (git-ignored here via .git/info/exclude) the wheels bench/device_check.py
# needs on an accelerator image that has jax, flax, optax, orbax-checkpoint, numpy, pillow,
# tensorboard, protobuf, pyarrow, etils and wrapt but no TensorFlow, TFDS, ml-collections or
# grain: CPython 3.12, manylinux x86_64. promise has no wheel on PyPI: built here (pure Python).
# Install there with:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
platforms="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp $platforms -d .whl \
  tensorflow-datasets==4.9.10 ml-collections==1.1.0 grain==0.2.18 array-record==0.8.6 \
  dm-tree==0.1.10 immutabledict==4.3.1 simple-parsing==0.1.9 docstring-parser==0.18.0 \
  tensorflow-metadata==1.21.0 googleapis-common-protos==1.76.0 termcolor==3.3.0 \
  toml==0.10.2 portpicker==1.6.0 importlib-resources==7.1.0
python3 -m pip wheel -q --no-deps promise==2.3 -w .whl
du -sh .whl
