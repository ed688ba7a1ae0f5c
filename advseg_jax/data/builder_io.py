"""What our TFDS builders share: finding the source archives and decoding files with checks.

Archives: a file of the expected name in `manual_dir` wins (the official servers are slow and
often down, so users fetch once and keep it); otherwise it is downloaded from its official
address. If its server cannot be reached (a machine without internet), the error comes at once
and says which file to put where, rather than after minutes of download retries. An archive
is read through before extraction, since TFDS extracts a truncated one without complaint and
the build then fails on some missing file. A failed build leaves nothing half-built behind
(`prepare`).

Decoding: every image and label file is decoded once while building, and any failure is raised
as a ValueError naming the file, so a corrupt download or a bad label value is reported at
build time with the file to look at, not as an opaque error deep in a training input pipeline.
"""

import dataclasses
import io
import os
import shutil
import socket
import tarfile
import urllib.parse
import zipfile
from typing import Dict, Iterable, Mapping, Optional, Set, Tuple

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


_PROBE_TIMEOUT_S = 5.0  # A reachable server answers a TCP connect well within this.


def server_reachable(url: str, timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to `url`'s host and port opens: no internet fails in seconds."""
    parsed = urllib.parse.urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _manual_dir_of(dl_manager: tfds.download.DownloadManager) -> Optional[epath.Path]:
    """The manual directory asked for, even if missing or empty (TFDS then asserts)."""
    try:
        return dl_manager.manual_dir
    except AssertionError:  # TFDS's way of saying: no manual_dir, or an empty one.
        configured = getattr(dl_manager, "_manual_dir", None)
        return epath.Path(configured) if configured else None


def locate_archives(dl_manager: tfds.download.DownloadManager,
                    archives: Mapping[str, Archive]) -> Dict[str, epath.Path]:
    """Path of each archive: taken from `manual_dir` when there, else downloaded; all checked."""
    manual_dir = _manual_dir_of(dl_manager)
    paths, missing = {}, {}
    for key, archive in archives.items():
        candidate = manual_dir / archive.filename if manual_dir else None
        if candidate is not None and candidate.exists():
            logging.info("Using %s from the manual directory.", candidate)
            paths[key] = candidate
        else:
            missing[key] = archive
    if missing:
        unreachable = sorted({urllib.parse.urlparse(a.url).hostname for a in missing.values()
                              if not server_reachable(a.url)})
        message = missing_archives_message(missing.values(), manual_dir,
                                           dl_manager.download_dir)
        if unreachable:
            raise FileNotFoundError(f"{message}\nNo download was tried: {', '.join(unreachable)} "
                                    "cannot be reached from this machine.")
        try:
            paths.update(dl_manager.download({key: a.url for key, a in missing.items()}))
        except Exception as error:  # Network errors come in many types; all mean the same here.
            raise FileNotFoundError(f"{message}\nThe download failed with: {error!r}") from error
    for path in paths.values():
        check_archive(path)
    return paths


def check_archive(path: epath.Path) -> None:
    """Reads a tar/zip archive to its end; ValueError naming it if truncated or corrupt."""
    name = os.fspath(path)
    try:
        if zipfile.is_zipfile(name):
            with zipfile.ZipFile(name) as archive:
                bad = archive.testzip()
                if bad:
                    raise ValueError(f"member {bad} is corrupt")
        else:
            with tarfile.open(name) as archive:  # Compressed or not.
                for member in archive:
                    if member.isfile():
                        archive.extractfile(member).read()
                # tarfile takes a cut at a member boundary for the end of the archive: check
                # for the two zero blocks that end a tar, then read on to the end of the
                # (decompressed) stream, where gzip checks its length and CRC.
                stream = archive.fileobj
                stream.seek(archive.offset)
                marker = stream.read(2 * tarfile.BLOCKSIZE)
                if len(marker) < 2 * tarfile.BLOCKSIZE or marker.strip(b"\0"):
                    raise ValueError("it ends without the end-of-archive marker")
                while stream.read(1 << 20):
                    pass
    except Exception as error:  # tarfile/zlib/EOF errors: all mean a damaged file.
        raise ValueError(
            f"Archive {name} ({os.path.getsize(name)} bytes) is truncated or corrupt ({error}). "
            "Download it again (an interrupted download leaves such a file) and replace it."
        ) from error


def extract(dl_manager: tfds.download.DownloadManager, archive: epath.Path) -> epath.Path:
    """The folder `archive` (.tar, .tar.gz, .tgz or .zip) unpacks to, under the download dir.

    Python's tarfile/zipfile, not `dl_manager.extract`: TFDS's extractor writes through
    TensorFlow's gfile, which accelerator images lack. Unpacked into a temporary folder and
    renamed when complete, so an interrupted extraction is never taken for a finished one.
    """
    archive = epath.Path(archive)
    parent = os.path.join(os.fspath(dl_manager.download_dir), "extracted_py")
    target = os.path.join(parent, archive.name)
    if os.path.isdir(target):
        return epath.Path(target)
    os.makedirs(parent, exist_ok=True)
    partial = target + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(os.fspath(archive)) as opened:
                opened.extractall(partial)
        else:
            with tarfile.open(os.fspath(archive)) as opened:
                opened.extractall(partial, filter="data")  # No links or paths out of it.
        os.replace(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return epath.Path(target)


def missing_archives_message(archives: Iterable[Archive], manual_dir: Optional[epath.Path],
                             download_dir: epath.Path) -> str:
    """Which files to download from where, and where to put them."""
    lines = [f"  {a.filename}  (download from {a.url})" for a in archives]
    where = (f"the manual directory {manual_dir}" if manual_dir else
             f"a manual directory passed as --manual_dir to advseg_jax.prepare_data (or "
             f"DownloadConfig(manual_dir=...)), by default {download_dir / 'manual'}")
    return ("Source archive(s) missing from the manual directory:\n" + "\n".join(lines) +
            f"\nDownload these files and put them, unextracted, in {where}.")


def _directories(root: str) -> Set[str]:
    return {os.path.join(parent, name) for parent, names, _ in os.walk(root) for name in names}


def prepare(builder: tfds.core.DatasetBuilder, data_dir: str,
            download_config: Optional[tfds.download.DownloadConfig] = None) -> None:
    """`builder.download_and_prepare`; on any failure, removes what this attempt half-built.

    TFDS leaves `incomplete.*` directories and partial extractions behind, and it reuses an
    existing extraction on the next attempt, so a fixed archive would not be extracted again.
    Only directories created by this attempt are removed; finished datasets are untouched.
    """
    data_dir = os.path.expanduser(data_dir)
    roots = [os.path.join(data_dir, builder.name), os.path.join(data_dir, "downloads")]
    before = {root: (os.path.exists(root), _directories(root)) for root in roots}
    try:
        builder.download_and_prepare(download_config=download_config)
    except BaseException:
        for root, (existed, directories) in before.items():
            if not existed:
                shutil.rmtree(root, ignore_errors=True)
                continue
            for new in sorted(_directories(root) - directories):
                if os.path.dirname(new) in directories or os.path.dirname(new) == root:
                    shutil.rmtree(new, ignore_errors=True)
        raise


# TensorFlow's encode_jpeg quality, used by TFDS when builders yielded arrays.
_JPEG_QUALITY = 95


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 [H, W], [H, W, 1] or [H, W, 3] array, encoded with PIL.

    Builders yield encoded bytes rather than arrays: TFDS encodes arrays with TensorFlow, bytes
    it stores as they are, so building needs no TensorFlow. PNG is lossless: the decoded
    array is the one given.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"encode_png needs uint8, got {array.dtype}.")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def read_rgb_image(path: epath.Path, encoding: str = "jpeg") -> Tuple[bytes, Tuple[int, int]]:
    """(bytes to store in a `tfds.features.Image` of `encoding`, (height, width)) of an image.

    A file already RGB in that encoding is stored as its original bytes (a JPEG is not
    recompressed); anything else (greyscale, CMYK, palette) is converted to RGB and encoded by
    PIL: PNG losslessly, JPEG at quality 95 (TensorFlow's encoder, which TFDS used before), so
    building needs no TensorFlow.
    """
    if encoding not in ("jpeg", "png"):
        raise ValueError(f"Image encoding must be 'jpeg' or 'png', got {encoding!r}.")
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # Decodes everything: a truncated or corrupt file fails here.
            size = (image.height, image.width)
            if image.format == encoding.upper() and image.mode == "RGB":
                return data, size
            rgb = image.convert("RGB")
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, ...
        raise ValueError(f"Cannot decode image {path}: {error}") from error
    if encoding == "png":
        return encode_png(np.asarray(rgb)), size
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=_JPEG_QUALITY)
    return buffer.getvalue(), size


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
