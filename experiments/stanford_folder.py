"""Writes Stanford Background as a user's folder: index-PNG masks with another void value.

    python -m experiments.stanford_folder --archive=../shared/data/stanford_background/\\
iccv09Data.tar.gz --output=/tmp/stanford_folder [--void_label=0] [--fold=0]

Layout `images/{train,val}/<id>.jpg` + `masks/{train,val}/<id>.png` (train = the four other
folds of `stanford_background/foldK`, val = fold K) and `class_names.txt`. Images are the
archive's JPEG bytes, unchanged. Masks store class c as c + 1 and "unknown" (-1) as 0 when
`void_label` is 0 (as many datasets' "unlabelled"), or c and `void_label` otherwise; the folder
dataset maps them back, so it must give exactly the `stanford_background` builder's examples
(tests/test_folder_real.py checks it). Also the recipe of the measurements
in docs/datasets.md "Your own data".
"""

import argparse
import os
import tarfile
from typing import Dict

import numpy as np
from PIL import Image

from advseg_jax.data import stanford_background
from advseg_jax.data.class_info import STANFORD_BACKGROUND_CLASSES

_ROOT = "iccv09Data"


def encode_mask(regions: np.ndarray, void_label: int) -> np.ndarray:
    """uint8 mask values of Stanford class ids (-1 = unknown) with `void_label` for unknown."""
    if void_label == 0:
        return (regions + 1).astype(np.uint8)  # -1 → 0, c → c + 1.
    if 0 < void_label < len(STANFORD_BACKGROUND_CLASSES):
        raise ValueError(f"void_label={void_label} would collide with a class id; use 0 or "
                         f">= {len(STANFORD_BACKGROUND_CLASSES)}.")
    return np.where(regions < 0, void_label, regions).astype(np.uint8)


def write_stanford_folder(archive: str, output: str, void_label: int = 0,
                          fold: int = 0) -> Dict[str, int]:
    """Writes the folder (one image in memory at a time); returns {split: image count}."""
    with tarfile.open(archive) as tar:  # Read in archive order: a .tar.gz cannot seek.
        ids = sorted(os.path.basename(m.name)[:-len(".jpg")] for m in tar.getmembers()
                     if m.name.startswith(f"{_ROOT}/images/") and m.name.endswith(".jpg"))
    folds = stanford_background.assign_folds(ids)
    split_of = {i: "val" if folds[i] == fold else "train" for i in ids}
    for split in ("train", "val"):
        for kind in ("images", "masks"):
            os.makedirs(os.path.join(output, kind, split), exist_ok=True)
    with tarfile.open(archive) as tar:
        for member in tar:
            name = member.name
            if name.startswith(f"{_ROOT}/images/") and name.endswith(".jpg"):
                image_id = os.path.basename(name)[:-len(".jpg")]
                with open(os.path.join(output, "images", split_of[image_id],
                                       f"{image_id}.jpg"), "wb") as f:
                    f.write(tar.extractfile(member).read())
            elif name.startswith(f"{_ROOT}/labels/") and name.endswith(".regions.txt"):
                image_id = os.path.basename(name)[:-len(".regions.txt")]
                text = tar.extractfile(member).read().decode()
                regions = np.array([line.split() for line in text.splitlines()
                                    if line.strip()], dtype=np.int64)
                Image.fromarray(encode_mask(regions, void_label)).save(
                    os.path.join(output, "masks", split_of[image_id], f"{image_id}.png"))
    counts = {s: sum(1 for i in ids if split_of[i] == s) for s in ("train", "val")}
    with open(os.path.join(output, "class_names.txt"), "w") as f:
        f.write("\n".join(STANFORD_BACKGROUND_CLASSES) + "\n")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archive", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--void_label", type=int, default=0)
    parser.add_argument("--fold", type=int, default=0)
    args = parser.parse_args()
    print(write_stanford_folder(args.archive, args.output, args.void_label, args.fold))


if __name__ == "__main__":
    main()
