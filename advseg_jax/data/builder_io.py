"""What our TFDS builders share: finding the source archives and decoding files with checks.

Archives: a file of the expected name in `manual_dir` wins (the official servers are slow and
often down, so users fetch once and keep it); otherwise it is downloaded from its official
address. If that fails too, the error says which file to put where, rather than a bare
connection error.

Decoding: every image and label file is decoded once while building, and any failure is raised
as a ValueError naming the file, so a corrupt download or a bad label value is reported at
build time with the file to look at, not as an opaque error deep in a training input pipeline.
"""

import dataclasses
import io
from typing import Dict, Iterable, Mapping, Tuple, Union

from absl import logging
import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from advseg_jax.data.class_info import IGNORE_LABEL


@dataclasses.dataclass(frozen=True)
class Archive:
    """A source archive: its file name in `manual_dir` and its official download address."""
    filename: str
    url: str


def locate_archives(dl_manager: tfds.download.DownloadManager,
                    archives: Mapping[str, Archive]) -> Dict[str, epath.Path]:
    """Path of each archive: taken from `manual_dir` when there, else downloaded."""
    try:
        manual_dir = dl_manager.manual_dir
    except AssertionError:  # TFDS's way of saying: no manual_dir, or an empty one.
        manual_dir = None
    paths, missing = {}, {}
    for key, archive in archives.items():
        candidate = manual_dir / archive.filename if manual_dir else None
        if candidate is not None and candidate.exists():
            logging.info("Using %s from the manual directory.", candidate)
            paths[key] = candidate
        else:
            missing[key] = archive
    if missing:
        try:
            paths.update(dl_manager.download({key: a.url for key, a in missing.items()}))
        except Exception as error:  # Network errors come in many types; all mean the same here.
            raise FileNotFoundError(
                    missing_archives_message(missing.values(), dl_manager.download_dir)
                    + f"\nThe download failed with: {error!r}") from error
    return paths


def missing_archives_message(archives: Iterable[Archive], download_dir: epath.Path) -> str:
    """Which files to download from where, and where to put them."""
    lines = [f"  {a.filename}  (download from {a.url})" for a in archives]
    return ("Source archive(s) not found in the manual directory and could not be downloaded.\n"
            "Download these files and put them, unextracted, in the manual directory:\n"
            + "\n".join(lines) + "\n"
            "The manual directory is the one given as --manual_dir to advseg_jax.prepare_data "
            "(or DownloadConfig(manual_dir=...)); "
            f"by default it is {download_dir / 'manual'}.")


def read_rgb_image(path: epath.Path) -> Tuple[Union[bytes, np.ndarray], Tuple[int, int]]:
    """(what to store in a JPEG `tfds.features.Image`, (height, width)) of an image file.

    An RGB JPEG is stored as its original bytes, so it is not recompressed; anything else
    (greyscale, CMYK) is converted to an RGB array that TFDS encodes.
    """
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # Decodes everything: a truncated or corrupt file fails here.
            size = (image.height, image.width)
            if image.format == "JPEG" and image.mode == "RGB":
                return data, size
            return np.asarray(image.convert("RGB")), size
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, ...
        raise ValueError(f"Cannot decode image {path}: {error}") from error


def read_index_png(path: epath.Path) -> np.ndarray:
    """Class indices [H, W] of a palette (or greyscale) PNG.

    VOC masks are palette images: the pixel values *are* the class ids (255 = void), and the
    palette only colours them. Converting to RGB would lose exactly that, so we never do.
    """
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            mode = image.mode
            labels = np.array(image)
    except Exception as error:
        raise ValueError(f"Cannot decode label image {path}: {error}") from error
    if mode not in ("P", "L"):
        raise ValueError(f"Label image {path} has mode {mode!r}; expected a palette ('P') or "
                         "greyscale ('L') PNG whose pixel values are class ids.")
    return labels


def check_labels(labels: np.ndarray, num_classes: int, path: epath.PathLike,
                 void_values: Tuple[int, ...] = (IGNORE_LABEL,)) -> None:
    """Raises if a label is neither a class id in [0, num_classes) nor one of `void_values`."""
    values = np.unique(labels)
    bad = values[((values < 0) | (values >= num_classes)) & ~np.isin(values, void_values)]
    if bad.size:
        raise ValueError(
                f"Label file {path} has class id(s) {bad.tolist()} outside [0, {num_classes}) "
                f"that are not void {list(void_values)}.")


def check_same_size(image_size: Tuple[int, int], labels: np.ndarray, image_path: epath.PathLike,
                    labels_path: epath.PathLike) -> None:
    """Raises if an image and its labels disagree in size (labels must map 1:1 to pixels)."""
    if tuple(labels.shape[:2]) != tuple(image_size):
        raise ValueError(f"Image {image_path} is {image_size[0]}x{image_size[1]} (HxW) but its "
                         f"labels {labels_path} are {labels.shape[0]}x{labels.shape[1]}.")


def segmentation_features() -> tfds.features.FeaturesDict:
    """The features of every real-image dataset here, named as TFDS's segmentation datasets."""
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
        "segmentation_mask": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
        "image/filename": tfds.features.Text(),
    })
