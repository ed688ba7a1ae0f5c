"""Builds a dataset ahead of training and prints what it holds.

    python -m advseg_jax.prepare_data --dataset=voc2012_segmentation \\
        --data_dir=~/tensorflow_datasets --manual_dir=~/downloads/voc
    python -m advseg_jax.prepare_data --config=folder --config.folder.root=~/data/mine \\
        --config.folder.class_names=classes.txt

Installed, the same flags work as the `advseg-prepare-data` console script. With `--config`
(a shipped name or a file, with `--config.KEY=VALUE` overrides) the dataset, data_dir and
manual_dir are the config's (as training will use them), and a summary follows the build:
examples and image sizes per split, pixels per class name, the void fraction, and the
`input.eval_size` and crop the data needs with that config. `--data_dir` / `--manual_dir`,
when given, still win.

Training builds a missing dataset on first use too; this CLI exists because building VOC+SBD
takes a while (extracting 3.4 GB of archives) and is better done once, up front, and because
TFDS 4.9's own `tfds build` needs apache_beam. `--manual_dir` holds source archives fetched by
hand (each builder's MANUAL_DOWNLOAD_INSTRUCTIONS names them); without it they are downloaded.
"""

import os
import sys
from typing import Optional, Sequence

from absl import app
from absl import flags
from ml_collections import config_flags
import tensorflow_datasets as tfds

# Registers every advseg_jax builder with TFDS; the two below also explicitly, since this
# module prepares them.
import advseg_jax.data  # noqa: F401
from advseg_jax import cli
from advseg_jax import config_checks
from advseg_jax import dataset_summary
from advseg_jax.data import builder_io
from advseg_jax.data import dataset_facts
from advseg_jax.data import dataset_info
from advseg_jax.data import folder_files
from advseg_jax.data import stanford_background  # noqa: F401
from advseg_jax.data import voc2012_segmentation  # noqa: F401

_DATASET = flags.DEFINE_string(
        "dataset", None, "TFDS name, with config if any: voc2012_segmentation, "
        "stanford_background/fold0 ... fold4, digit_scenes. Or give --config.")
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
    builder = tfds.builder(dataset, data_dir=data_dir, file_format=dataset_info.ARRAY_RECORD)
    builder_io.prepare(builder, data_dir, tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    FLAGS = flags.FLAGS
    if bool(_DATASET.value) == bool("config" in FLAGS and FLAGS.config):
        raise app.UsageError("Give either --dataset=NAME or --config=CONFIG.")
    if _DATASET.value:
        builder = prepare(_DATASET.value, _DATA_DIR.value, _MANUAL_DIR.value)
        for name, split in builder.info.splits.items():
            print(f"{builder.info.full_name} {name}: {split.num_examples} examples")
        return
    try:
        config = config_checks.config_from_flag(FLAGS)
        if FLAGS["data_dir"].present:
            config.data_dir = _DATA_DIR.value
        if FLAGS["manual_dir"].present:
            config.manual_dir = _MANUAL_DIR.value
        builder = dataset_info.builder(config)
        builder_io.prepare(builder, config.data_dir,
                           tfds.download.DownloadConfig(manual_dir=config.manual_dir or None))
        builder = dataset_info.builder(config)  # Re-read: the statistics are on disk now.
        config = dataset_facts.with_num_classes_from_builder(config, builder)
        print(dataset_summary.summary(config, builder))
    except (config_checks.ConfigError, folder_files.FolderError) as error:
        sys.exit(f"Error: {error}")


def _define_config_flag() -> None:
    """Defined when run, not on import: other CLIs that tests import define --config too."""
    config_flags.DEFINE_config_file("config", None, "A training config (e.g. folder): its "
                                    "dataset is built and summarised.", lock_config=True)


def run() -> None:
    _define_config_flag()
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
