"""Writes the builders' dummy data: tiny copies of the real archives, in the real layouts.

The builders read the very files a user downloads (VOC's .tar, SBD's .tgz, Stanford's .tar.gz)
from `manual_dir`, so the tests feed them archives with the same member paths, formats and
quirks: palette PNG masks with void (255) object outlines, SBD masks in MATLAB structs
(`GTcls.Segmentation`), Stanford labels as text with -1 for "unknown".

The id lists exercise every rule of the VOC `train_aug` split:
    * 2007_000032 and 2007_000039 are in VOC train *and* in SBD, with different masks there:
      `train_aug` must keep VOC's mask, once.
    * 2007_000033 (SBD train) and 2008_000009 (SBD val) are VOC val images: not in `train_aug`.
    * 2008_000015 and 2008_000032 are SBD-only: `train_aug` takes SBD's image and mask.
    * 2007_000027 has a JPEG but no mask in VOC (a detection-only image): in no split.

Output is byte-for-byte deterministic (fixed tar/gzip/MAT headers), so re-running changes
nothing. Run from the repository root:

    python -m advseg_jax.data.dummy_data.make_dummy_data

Tests import the member builders below to write corrupt variants of the same archives.
"""

import gzip
import io
import pathlib
import tarfile
from typing import Dict, Tuple

import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image

from advseg_jax.data import class_info

DUMMY_DIR = pathlib.Path(__file__).resolve().parent

VOC_TAR = "VOCtrainval_11-May-2012.tar"
SBD_TGZ = "benchmark.tgz"
STANFORD_TGZ = "iccv09Data.tar.gz"

VOC_ROOT = "VOCdevkit/VOC2012"
SBD_ROOT = "benchmark_RELEASE/dataset"
STANFORD_ROOT = "iccv09Data"

VOC_TRAIN = ("2007_000032", "2007_000039", "2008_000008")
VOC_VAL = ("2007_000033", "2008_000009")
VOC_NO_MASK = ("2007_000027",)
SBD_TRAIN = ("2007_000033", "2007_000039", "2008_000015")
SBD_VAL = ("2007_000032", "2008_000009", "2008_000032")

STANFORD_IDS = tuple(f"{i:07d}" for i in (47, 51, 59, 62, 65, 68, 71, 72, 74, 76))

Members = Dict[str, bytes]


def image_size(image_id: str) -> Tuple[int, int]:
    """(height, width): two sizes, so builders and tests cannot assume one shape."""
    return (30, 40) if int(image_id[-1]) % 2 == 0 else (28, 36)


def _seed(image_id: str) -> int:
    return int(image_id.replace("_", ""))


def make_image(image_id: str) -> np.ndarray:
    """A smooth RGB picture (JPEG-friendly) that differs per id."""
    height, width = image_size(image_id)
    rng = np.random.RandomState(_seed(image_id) % (2**31))
    rows, cols = np.mgrid[0:height, 0:width]
    base = rng.randint(0, 200, size=3)
    image = base + np.stack([rows * 2, cols * 2, (rows + cols)], axis=-1)
    return np.clip(image, 0, 255).astype(np.uint8)


def voc_mask(image_id: str) -> np.ndarray:
    """VOC-style labels [H, W]: two objects on background, each outlined by void (255)."""
    height, width = image_size(image_id)
    first = 1 + _seed(image_id) % 20
    second = 1 + (first + 6) % 20
    mask = np.zeros((height, width), np.uint8)
    mask[4:16, 5:20] = class_info.IGNORE_LABEL
    mask[5:15, 6:19] = first
    mask[17:26, 22:34] = class_info.IGNORE_LABEL
    mask[18:25, 23:33] = second
    return mask


def sbd_mask(image_id: str) -> np.ndarray:
    """SBD-style labels [H, W]: other objects than VOC's for the same id, and no void."""
    height, width = image_size(image_id)
    mask = np.zeros((height, width), np.uint8)
    mask[height // 2:, : width // 2] = 1 + (_seed(image_id) + 3) % 20
    mask[: height // 3, width // 2:] = 1 + (_seed(image_id) + 11) % 20
    return mask


def stanford_regions(image_id: str) -> np.ndarray:
    """Stanford-style labels [H, W] in -1..7: bands of sky/tree/building/road, an unknown blob."""
    height, width = image_size(image_id)
    offset = _seed(image_id) % 4
    regions = np.zeros((height, width), np.int64)  # sky
    regions[8 + offset:, :] = 1  # tree
    regions[8 + offset:, width // 2:] = 5  # building
    regions[20:, :] = 2  # road
    regions[22:, : width // 3] = 3  # grass
    regions[10:14, 10:14] = 7  # foreground object
    regions[2:5, 2:6] = -1  # unknown
    return regions


def encode_jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def encode_palette_png(mask: np.ndarray) -> bytes:
    """A mode-"P" PNG with the VOC colour map, as in VOC's SegmentationClass."""
    image = Image.fromarray(mask, mode="P")
    image.putpalette(class_info.voc_palette().reshape(-1).tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def encode_sbd_mat(mask: np.ndarray) -> bytes:
    """SBD's cls/<id>.mat: struct GTcls {Boundaries (20x1 cell of sparse), Segmentation,
    CategoriesPresent}, with the MAT header's timestamp fixed so output is deterministic."""
    boundaries = np.empty((20, 1), dtype=object)
    for label in range(1, 21):
        region = mask == label
        edge = region & ~np.roll(region, 1, axis=0)
        boundaries[label - 1, 0] = scipy.sparse.csc_matrix(edge.astype(np.float64))
    present = np.array([v for v in np.unique(mask) if v != 0], np.uint8).reshape(-1, 1)
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"GTcls": {"Boundaries": boundaries, "Segmentation": mask,
                                        "CategoriesPresent": present}},
                     do_compression=True, oned_as="column")
    data = bytearray(buffer.getvalue())
    header = b"MATLAB 5.0 MAT-file, written by advseg_jax make_dummy_data"
    data[:116] = header.ljust(116, b" ")
    return bytes(data)


def encode_regions(regions: np.ndarray) -> bytes:
    return "".join(" ".join(str(v) for v in row) + "\n" for row in regions).encode()


def _id_list(ids) -> bytes:
    return "".join(f"{i}\n" for i in ids).encode()


def voc_members() -> Members:
    """Member path → bytes of VOCtrainval_11-May-2012.tar."""
    members = {}
    for image_id in sorted(VOC_TRAIN + VOC_VAL + VOC_NO_MASK):
        members[f"{VOC_ROOT}/JPEGImages/{image_id}.jpg"] = encode_jpeg(make_image(image_id))
    split_dir = f"{VOC_ROOT}/ImageSets/Segmentation"
    members[f"{split_dir}/train.txt"] = _id_list(VOC_TRAIN)
    members[f"{split_dir}/trainval.txt"] = _id_list(sorted(VOC_TRAIN + VOC_VAL))
    members[f"{split_dir}/val.txt"] = _id_list(VOC_VAL)
    for image_id in sorted(VOC_TRAIN + VOC_VAL):
        members[f"{VOC_ROOT}/SegmentationClass/{image_id}.png"] = encode_palette_png(
                voc_mask(image_id))
    return members


def sbd_members() -> Members:
    """Member path → bytes of SBD's benchmark.tgz."""
    ids = sorted(SBD_TRAIN + SBD_VAL)
    members = {}
    for image_id in ids:
        members[f"{SBD_ROOT}/cls/{image_id}.mat"] = encode_sbd_mat(sbd_mask(image_id))
    for image_id in ids:
        members[f"{SBD_ROOT}/img/{image_id}.jpg"] = encode_jpeg(make_image(image_id))
    members[f"{SBD_ROOT}/train.txt"] = _id_list(SBD_TRAIN)
    members[f"{SBD_ROOT}/val.txt"] = _id_list(SBD_VAL)
    return members


def stanford_members() -> Members:
    """Member path → bytes of iccv09Data.tar.gz (with the unused surfaces/layers/horizons too)."""
    members = {}
    horizons = []
    for image_id in STANFORD_IDS:
        members[f"{STANFORD_ROOT}/images/{image_id}.jpg"] = encode_jpeg(make_image(image_id))
        height, width = image_size(image_id)
        horizons.append(f"{image_id} {width} {height} {height // 2}\n")
    members[f"{STANFORD_ROOT}/horizons.txt"] = "".join(horizons).encode()
    for image_id in STANFORD_IDS:
        regions = stanford_regions(image_id)
        labels = f"{STANFORD_ROOT}/labels/{image_id}"
        members[f"{labels}.layers.txt"] = encode_regions(np.where(regions < 0, -1, 0))
        members[f"{labels}.regions.txt"] = encode_regions(regions)
        members[f"{labels}.surfaces.txt"] = encode_regions(np.minimum(regions, 2))
    return members


def write_archive(path: pathlib.Path, members: Members) -> None:
    """A tar (gzipped if the name says so) with directory entries and fixed metadata."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        directories = set()
        for name in members:
            parts = name.split("/")[:-1]
            directories.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
        entries = [(d, None) for d in directories] + list(members.items())
        for name, data in sorted(entries, key=lambda entry: entry[0]):
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    if path.name.endswith((".tgz", ".tar.gz")):
        data = gzip.compress(data, compresslevel=9, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def main() -> None:
    voc_dir = DUMMY_DIR / "voc2012_segmentation"
    write_archive(voc_dir / VOC_TAR, voc_members())
    write_archive(voc_dir / SBD_TGZ, sbd_members())
    write_archive(DUMMY_DIR / "stanford_background" / STANFORD_TGZ, stanford_members())


if __name__ == "__main__":
    main()
