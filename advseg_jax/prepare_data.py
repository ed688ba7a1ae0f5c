"""Builds one of our TFDS datasets ahead of training.

    python -m advseg_jax.prepare_data --dataset=voc2012_segmentation \\
        --data_dir=~/tensorflow_datasets --manual_dir=~/downloads/voc

Installed, the same flags work as the `advseg-prepare-data` console script.

Training builds a missing dataset on first use too; this CLI exists because building VOC+SBD
takes a while (extracting 3.4 GB of archives) and is better done once, up front, and because
TFDS 4.9's own `tfds build` needs apache_beam. `--manual_dir` holds source archives fetched by
hand (each builder's MANUAL_DOWNLOAD_INSTRUCTIONS names them); without it they are downloaded.
"""

import os
from typing import Optional, Sequence

from absl import app
from absl import flags
import tensorflow_datasets as tfds

# Registers every advseg_jax builder with TFDS; the two below also explicitly, since this
# module prepares them.
import advseg_jax.data  # noqa: F401
from advseg_jax import cli
from advseg_jax.data import builder_io
from advseg_jax.data import stanford_background  # noqa: F401
from advseg_jax.data import voc2012_segmentation  # noqa: F401

_DATASET = flags.DEFINE_string(
        "dataset", None, "TFDS name, with config if any: voc2012_segmentation, "
        "stanford_background/fold0 ... fold4, digit_scenes.")
# The configs' default data_dir, so a prepared dataset is where training looks for it.
_DATA_DIR = flags.DEFINE_string(
        "data_dir", os.path.join(os.path.expanduser("~"), "tensorflow_datasets"),
        "TFDS data directory to build into.")
_MANUAL_DIR = flags.DEFINE_string(
        "manual_dir", None, "Directory holding manually downloaded source archives; "
        "default <data_dir>/downloads/manual.")


def prepare(dataset: str, data_dir: str,
            manual_dir: Optional[str] = None) -> tfds.core.DatasetBuilder:
    """Downloads (or reads from `manual_dir`) and prepares `dataset` in `data_dir`."""
    builder = tfds.builder(dataset, data_dir=data_dir)
    builder_io.prepare(builder, data_dir, tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    builder = prepare(_DATASET.value, _DATA_DIR.value, _MANUAL_DIR.value)
    for name, split in builder.info.splits.items():
        print(f"{builder.info.full_name} {name}: {split.num_examples} examples")


def run() -> None:
    flags.mark_flags_as_required(["dataset"])
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
