"""`stanford_background`: the Stanford Background dataset (Gould et al. 2009), 5-fold splits.

715 outdoor scenes (about 320x240) with per-pixel labels of 8 classes (`class_info.
STANFORD_BACKGROUND_CLASSES`: sky, tree, road, grass, water, building, mountain, foreground
object). Pixels labelled -1 ("unknown") in the source are void, 255.

The dataset has no official split; papers, Luc et al. 2016 included, report 5-fold
cross-validation. The folds here are fixed and reproducible without any random generator:
the image ids (file names without `.jpg`) are sorted by the SHA-256 hex digest of the id, and
the image at rank r of that order is in fold r mod 5. Folds thus have 143 images each, and an
image's fold depends only on the set of ids, not on the library versions or the file order.
Config `foldK` (K = 0..4; `stanford_background/fold0` is the default) has:
    test   the images of fold K (143),
    train  the images of the four other folds (572).

Source: `iccv09Data.tar.gz` (images in `iccv09Data/images/<id>.jpg`, labels in
`iccv09Data/labels/<id>.regions.txt`, one line of whitespace-separated ints per image row),
read from the manual directory when there, else downloaded from its official address.
"""

import dataclasses
import hashlib
from typing import Dict, Iterator, List, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from advseg_jax.data import builder_io
from advseg_jax.data import class_info
from advseg_jax.data.class_info import IGNORE_LABEL, STANFORD_BACKGROUND_CLASSES

ARCHIVE = builder_io.Archive("iccv09Data.tar.gz", "http://dags.stanford.edu/data/iccv09Data.tar.gz")
NUM_FOLDS = 5
NUM_IMAGES = 715
NUM_CLASSES = len(STANFORD_BACKGROUND_CLASSES)
_UNKNOWN = -1
_ROOT = "iccv09Data"

_CITATION = """\
@inproceedings{gould2009decomposing,
    author = "Gould, Stephen and Fulton, Richard and Koller, Daphne",
    title = "Decomposing a scene into geometric and semantically consistent regions",
    booktitle = "International Conference on Computer Vision (ICCV)",
    year = "2009"}
"""


def assign_folds(image_ids: Sequence[str]) -> Dict[str, int]:
    """Image id → fold in [0, NUM_FOLDS): rank in SHA-256 order, mod NUM_FOLDS."""
    ranked = sorted(set(image_ids), key=lambda i: hashlib.sha256(i.encode("utf-8")).hexdigest())
    return {image_id: rank % NUM_FOLDS for rank, image_id in enumerate(ranked)}


def read_regions(path: epath.Path) -> np.ndarray:
    """uint8 class ids [H, W] of a `<id>.regions.txt`, with -1 (unknown) mapped to void 255."""
    try:
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        regions = np.array(rows, dtype=np.int64)  # Ragged rows or non-integers raise here.
        if regions.ndim != 2 or regions.size == 0:
            raise ValueError(f"expected a non-empty table of integers, got shape {regions.shape}")
    except ValueError as error:
        raise ValueError(f"Cannot parse Stanford Background labels {path}: {error}") from error
    builder_io.check_labels(regions, NUM_CLASSES, path, void_values=(_UNKNOWN,))
    return np.where(regions == _UNKNOWN, IGNORE_LABEL, regions).astype(np.uint8)


@dataclasses.dataclass
class StanfordBackgroundConfig(tfds.core.BuilderConfig):
    """Which of the NUM_FOLDS folds is the test split."""
    fold: int = 0


class StanfordBackground(tfds.core.GeneratorBasedBuilder):
    """Stanford Background with fixed 5-fold train/test splits (see module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: 5 folds (SHA-256 order of ids), -1 → 255."}
    BUILDER_CONFIGS = [
            StanfordBackgroundConfig(
                    name=f"fold{k}", fold=k,
                    description=f"Test: fold {k} of {NUM_FOLDS}; train: the other folds.")
            for k in range(NUM_FOLDS)
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "fold0"
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
    Optional: otherwise the file is downloaded from its official address.
    Put {ARCHIVE.filename}, unextracted, in the manual directory (--manual_dir of
    advseg_jax.prepare_data; default <data_dir>/downloads/manual). Download it from
    {ARCHIVE.url}
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
                description=__doc__,
                features=builder_io.segmentation_features(),
                supervised_keys=("image", "segmentation_mask"),
                metadata=class_info.metadata(STANFORD_BACKGROUND_CLASSES,
                                             source_void_label=_UNKNOWN),
                homepage="http://dags.stanford.edu/projects/scenedataset.html",
                citation=_CITATION,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        archive = builder_io.locate_archives(dl_manager, {"data": ARCHIVE})["data"]
        root = builder_io.extract(dl_manager, archive) / _ROOT
        image_ids = sorted(p.name[:-len(".jpg")] for p in (root / "images").glob("*.jpg"))
        if len(image_ids) != NUM_IMAGES:
            logging.warning("%s has %d images, not the %d of the published dataset.",
                            ARCHIVE.filename, len(image_ids), NUM_IMAGES)
        folds = assign_folds(image_ids)
        test_fold = self.builder_config.fold
        splits = {"train": [i for i in image_ids if folds[i] != test_fold],
                  "test": [i for i in image_ids if folds[i] == test_fold]}
        return {split: self._generate_examples(ids, root) for split, ids in splits.items()}

    def _generate_examples(self, image_ids: List[str],
                           root: epath.Path) -> Iterator[Tuple[str, dict]]:
        for image_id in image_ids:
            image_path = root / "images" / f"{image_id}.jpg"
            labels_path = root / "labels" / f"{image_id}.regions.txt"
            image, size = builder_io.read_rgb_image(image_path)
            labels = read_regions(labels_path)
            builder_io.check_same_size(size, labels, image_path, labels_path)
            yield image_id, {
                    "image": image,
                    "segmentation_mask": builder_io.encode_png(labels.astype(np.uint8)),
                    "image/filename": f"{image_id}.jpg",
            }
