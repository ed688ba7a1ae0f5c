"""`segmentation_folder`: a user's directory of images and masks as a TFDS dataset.

Configured by `config.folder` (configs/folder.py documents the keys), not by code: the builder
config is made from those keys at run time (`builder_config`), like TFDS's own ImageFolder.
Its name is a fingerprint of the file list (paths, sizes, modification times) and of the
settings, so a changed folder is built anew under a new name, never read from a stale cache.

Features are those of our other datasets (`image` uint8 HxWx3, `segmentation_mask` uint8 HxWx1
with void 255, `image/filename`), so training, evaluation, predict and the benchmark use it
unchanged. The class names, their colours and the void mapping are the dataset's metadata
(`builder.info.metadata`), as for every dataset here; so are the files of each split (the
held-out list included) and per-split statistics (`folder_summary` prints them).

Building first checks every pair (sizes from headers, truncation, every mask's values; one file
in memory at a time) and only then writes: a bad file fails in seconds, naming it, and
`builder_io.prepare` removes whatever the attempt had started.
"""

import dataclasses
import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from advseg_jax.data import builder_io
from advseg_jax.data import class_info
from advseg_jax.data import folder_files
from advseg_jax.data import folder_labels
from advseg_jax.data.class_info import IGNORE_LABEL
from advseg_jax.data.folder_files import FolderError, Pair

NAME = "segmentation_folder"
UNLABELED_SPLIT = "unlabeled"
_JPEG_EXTENSIONS = (".jpg", ".jpeg")


@dataclasses.dataclass(eq=False)
class FolderConfig(tfds.core.BuilderConfig):
    """The resolved `config.folder`: which files make each split, and how to read the masks."""
    splits: Dict[str, List[Pair]] = dataclasses.field(default_factory=dict)
    unlabeled: List[Tuple[str, str]] = dataclasses.field(default_factory=list)  # (stem, path)
    class_names: Tuple[str, ...] = ()
    colours: Optional[Dict[Tuple[int, int, int], int]] = None
    void_label: int = IGNORE_LABEL
    image_encoding: str = "jpeg"

    def __repr__(self) -> str:  # TFDS logs the config: not thousands of file names.
        counts = {split: len(pairs) for split, pairs in self.splits.items()}
        if self.unlabeled:
            counts[UNLABELED_SPLIT] = len(self.unlabeled)
        return (f"FolderConfig(name={self.name!r}, examples={counts}, "
                f"classes={list(self.class_names)}, void_label={self.void_label})")


def builder_config(folder: ml_collections.ConfigDict) -> FolderConfig:
    """`config.folder` → FolderConfig; FolderError (naming the key or file) if it cannot work.

    Lists directories and stats files only: fast enough to run at every start.
    """
    if not 0 <= folder.void_label <= 65535:
        raise FolderError(f"config.folder.void_label={folder.void_label} must be a mask value "
                          "in 0..65535 (255 by default).")
    names = (folder_labels.parse_class_names(folder.class_names) if folder.class_names
             else ())
    colours = None
    if folder.colors:
        names, colours = folder_labels.read_colors(folder.colors, names)
    if not names:
        raise FolderError("Set config.folder.class_names: comma-separated names (e.g. "
                          "'background,road,car') or a text file with one name a line, in the "
                          "order of the mask values (the void value skipped).")
    splits = folder_files.split_pairs(folder)
    unlabeled = (folder_files.list_images(folder.unlabeled_images)
                 if folder.get("unlabeled_images") else [])
    images = [p.image for pairs in splits.values() for p in pairs] + [p for _, p in unlabeled]
    masks = [p.mask for pairs in splits.values() for p in pairs]
    encoding = ("jpeg" if all(p.lower().endswith(_JPEG_EXTENSIONS) for p in images)
                else "png")
    settings = {"class_names": names, "void_label": folder.void_label,
                "colours": sorted((list(k), v) for k, v in (colours or {}).items()),
                "splits": {s: [p.stem for p in pairs] for s, pairs in splits.items()},
                "unlabeled": [s for s, _ in unlabeled]}
    name = "d" + folder_files.fingerprint(images + masks, settings)
    return FolderConfig(name=name, splits=splits, unlabeled=unlabeled, class_names=names,
                        colours=colours, void_label=int(folder.void_label),
                        image_encoding=encoding,
                        description=f"{len(images)} images from {folder_directories(folder)}")


def folder_directories(folder: ml_collections.ConfigDict) -> str:
    directories = folder_files.resolve_directories(folder)
    return ", ".join(d for d in (directories.train_images, directories.eval_images) if d)


def _statistics(num_classes: int) -> dict:
    return {"examples": 0, "min_size": None, "max_size": None,
            "class_pixels": [0] * num_classes, "void_pixels": 0}


def _update(stats: dict, size: Tuple[int, int], labels: Optional[np.ndarray]) -> None:
    stats["examples"] += 1
    stats["min_size"] = list(size) if stats["min_size"] is None else [
        min(a, b) for a, b in zip(stats["min_size"], size)]
    stats["max_size"] = list(size) if stats["max_size"] is None else [
        max(a, b) for a, b in zip(stats["max_size"], size)]
    if labels is not None:
        counts = np.bincount(labels.ravel(), minlength=IGNORE_LABEL + 1)
        num_classes = len(stats["class_pixels"])
        stats["class_pixels"] = [a + int(b) for a, b in zip(stats["class_pixels"],
                                                            counts[:num_classes])]
        stats["void_pixels"] += int(counts[IGNORE_LABEL])


class SegmentationFolder(tfds.core.GeneratorBasedBuilder):
    """Images and masks paired by file stem (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def __init__(self, *, config: Optional[FolderConfig] = None, **kwargs):
        if not isinstance(config, FolderConfig):
            raise FolderError(f"The {NAME} dataset is configured by config.folder: build it with "
                              "advseg_jax.data.dataset_info.builder(config) (training, "
                              "prepare_data --config=folder and the other CLIs do), not by name.")
        super().__init__(config=config, **kwargs)

    @property
    def decoder(self) -> folder_labels.MaskDecoder:
        config = self.builder_config
        return folder_labels.MaskDecoder(len(config.class_names), config.void_label,
                                         config.colours)

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        features = builder_io.segmentation_features()
        if config.image_encoding != "jpeg":  # Lossless images stay lossless.
            features = tfds.features.FeaturesDict({
                **features,
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png")})
        metadata = class_info.metadata(
            config.class_names,
            folder_labels.palette(config.class_names, config.colours, class_info.voc_palette()),
            source_void_label=config.void_label)
        metadata["files"] = {split: [p.stem for p in pairs]
                             for split, pairs in config.splits.items()}
        if config.unlabeled:
            metadata["files"][UNLABELED_SPLIT] = [stem for stem, _ in config.unlabeled]
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__, features=features,
            supervised_keys=("image", "segmentation_mask"), metadata=metadata)

    def check_files(self) -> Dict[str, dict]:
        """Every pair checked (sizes, truncation, mask values): {split: statistics}."""
        config = self.builder_config
        decoder = self.decoder
        statistics = {}
        for split, pairs in config.splits.items():
            stats = statistics[split] = _statistics(len(config.class_names))
            for pair in pairs:
                size = folder_labels.probe_image(pair.image)
                labels = decoder.decode(pair.mask)
                if labels.shape != size:
                    raise FolderError(
                        f"Mask {pair.mask} is {labels.shape[0]}x{labels.shape[1]} (HxW) but its "
                        f"image {pair.image} is {size[0]}x{size[1]}: each mask pixel labels the "
                        "image pixel at the same place. Export the mask at the image's size "
                        "(or check that the pair is the right one).")
                _update(stats, size, labels)
        if config.unlabeled:
            stats = statistics[UNLABELED_SPLIT] = _statistics(len(config.class_names))
            for _, path in config.unlabeled:
                size = folder_labels.probe_image(path)
                _update(stats, size, None)
                stats["void_pixels"] += size[0] * size[1]
        return statistics

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # Everything is in the user's directories.
        self.info.metadata["statistics"] = self.check_files()
        generators = {split: self._generate_examples(pairs)
                      for split, pairs in self.builder_config.splits.items()}
        if self.builder_config.unlabeled:
            generators[UNLABELED_SPLIT] = self._generate_unlabeled(self.builder_config.unlabeled)
        return generators

    def _generate_examples(self, pairs: Sequence[Pair]) -> Iterator[Tuple[str, dict]]:
        decoder = self.decoder
        for pair in pairs:
            image, size = builder_io.read_rgb_image(epath.Path(pair.image),
                                                    self.builder_config.image_encoding)
            labels = decoder.decode(pair.mask)
            builder_io.check_same_size(size, labels, pair.image, pair.mask)
            yield pair.stem, {"image": image, "segmentation_mask": builder_io.encode_png(labels),
                              "image/filename": pair.stem + os.path.splitext(pair.image)[1]}

    def _generate_unlabeled(self, images: Sequence[Tuple[str, str]]
                            ) -> Iterator[Tuple[str, dict]]:
        for stem, path in images:
            image, (height, width) = builder_io.read_rgb_image(
                    epath.Path(path), self.builder_config.image_encoding)
            yield stem, {"image": image,
                         "segmentation_mask": builder_io.encode_png(
                                 np.full((height, width), IGNORE_LABEL, np.uint8)),
                         "image/filename": stem + os.path.splitext(path)[1]}
