"""Which files make a folder dataset: layouts, image/mask pairing by stem, the held-out split.

Everything here reads directory listings and file sizes only (no image is opened), so pairing
mistakes are reported in a fraction of a second, before any decoding, and the fingerprint that
names the built dataset changes whenever a file is added, removed, renamed or rewritten.
"""

import dataclasses
import hashlib
import json
import os
from typing import Dict, List, Sequence, Tuple

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff")
_LISTED = 5  # File names quoted in an error message; the rest are counted.


class FolderError(ValueError):
    """A folder dataset that cannot be built; the message names the file or key and the fix."""


@dataclasses.dataclass(frozen=True)
class Pair:
    """One example: its stem (relative path without extension, '/'-separated) and its files."""
    stem: str
    image: str
    mask: str


@dataclasses.dataclass(frozen=True)
class Directories:
    """The directories (and VOC-style id lists) the folder keys resolve to; "" = not given."""
    train_images: str
    train_masks: str
    eval_images: str = ""
    eval_masks: str = ""
    train_list: str = ""  # VOC ImageSets/Segmentation/train.txt: the stems of the split.
    eval_list: str = ""
    # VOC's JPEGImages/ also holds the detection-only images: those without a mask are skipped.
    images_without_masks_skipped: bool = False


def _quote(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown + (f", ... ({len(items) - _LISTED} more)" if len(items) > _LISTED else "")


def _first_existing(root: str, names: Sequence[str]) -> str:
    return next((os.path.join(root, n) for n in names if os.path.isdir(os.path.join(root, n))),
                "")


def detect_layout(root: str) -> Directories:
    """The directories of a dataset root in one of the layouts docs/datasets.md lists.

    VOC: JPEGImages/ + SegmentationClass/ (+ ImageSets/Segmentation/{train,val}.txt); or
    images/ + masks/ (or annotations/), each either flat or split in train|training and
    val|validation sub-folders.
    """
    root = os.path.expanduser(root)
    if not os.path.isdir(root):
        raise FolderError(f"config.folder.root={root!r} is not a directory.")
    if os.path.isdir(os.path.join(root, "JPEGImages")):
        masks = os.path.join(root, "SegmentationClass")
        if not os.path.isdir(masks):
            raise FolderError(f"config.folder.root={root!r} looks VOC-style (it has JPEGImages/) "
                              f"but has no SegmentationClass/ next to it; put the masks there.")
        lists = os.path.join(root, "ImageSets", "Segmentation")
        train_list, eval_list = (os.path.join(lists, f"{s}.txt") for s in ("train", "val"))
        return Directories(os.path.join(root, "JPEGImages"), masks,
                           train_list=train_list if os.path.isfile(train_list) else "",
                           eval_list=eval_list if os.path.isfile(eval_list) else "",
                           images_without_masks_skipped=True)
    images = _first_existing(root, ("images",))
    masks = _first_existing(root, ("masks", "annotations"))
    if not images or not masks:
        raise FolderError(
            f"config.folder.root={root!r} matches no known layout: expected JPEGImages/ + "
            "SegmentationClass/ (VOC) or images/ + masks/ (or annotations/), found "
            f"{sorted(os.listdir(root))[:10]}. Set config.folder.train_images and "
            "config.folder.train_masks instead.")
    train = ("train", "training")
    val = ("val", "validation")
    train_images, train_masks = _first_existing(images, train), _first_existing(masks, train)
    if train_images and train_masks:
        eval_images, eval_masks = _first_existing(images, val), _first_existing(masks, val)
        if bool(eval_images) != bool(eval_masks):
            raise FolderError(f"config.folder.root={root!r}: {eval_images or eval_masks} has no "
                              "counterpart for the other of images/masks; add it or remove it.")
        return Directories(train_images, train_masks, eval_images, eval_masks)
    return Directories(images, masks)


def resolve_directories(folder) -> Directories:
    """The directories of `config.folder`: explicit keys win over those `root` detects."""
    found = detect_layout(folder.root) if folder.root else Directories("", "")
    directories = Directories(
        train_images=folder.train_images or found.train_images,
        train_masks=folder.train_masks or found.train_masks,
        eval_images=folder.eval_images or found.eval_images,
        eval_masks=folder.eval_masks or found.eval_masks,
        train_list="" if folder.train_images else found.train_list,
        eval_list="" if folder.eval_images else found.eval_list,
        images_without_masks_skipped=found.images_without_masks_skipped and not (
            folder.train_images or folder.train_masks))
    if not directories.train_images or not directories.train_masks:
        raise FolderError("Set config.folder.train_images and config.folder.train_masks (the "
                          "directories of training images and masks), or config.folder.root.")
    if bool(directories.eval_images) != bool(directories.eval_masks):
        raise FolderError("Set both config.folder.eval_images and config.folder.eval_masks, or "
                          "neither (then config.folder.eval_fraction of the training pairs are "
                          "held out).")
    return directories


def list_files(directory: str, extensions: Sequence[str], key: str,
               suffix: str = "") -> Dict[str, str]:
    """{stem: path} of the files under `directory` (recursively) with one of `extensions`.

    The stem keeps sub-folders ('a/b' for a/b.png) and loses `suffix` (a mask suffix); files
    without `suffix` are not listed. Two files of one stem are an error naming both.
    """
    directory = os.path.expanduser(directory)
    if not os.path.isdir(directory):
        raise FolderError(f"config.folder.{key}={directory!r} is not a directory.")
    files: Dict[str, str] = {}
    for parent, dirs, names in os.walk(directory):
        dirs.sort()
        for name in sorted(names):
            base, extension = os.path.splitext(name)
            if extension.lower() not in extensions or name.startswith("."):
                continue
            if suffix:
                if not base.endswith(suffix):
                    continue
                base = base[:-len(suffix)]
            relative = os.path.relpath(os.path.join(parent, base), directory)
            stem = relative.replace(os.sep, "/")
            path = os.path.join(parent, name)
            if stem in files:
                raise FolderError(f"{files[stem]} and {path} have the same stem {stem!r}, so "
                                  "neither can be paired unambiguously; rename or remove one.")
            files[stem] = path
    if not files:
        what = f"files ending in {suffix}{{{','.join(extensions)}}}" if suffix else \
            f"files with extension {', '.join(extensions)}"
        raise FolderError(f"config.folder.{key}={directory!r} has no {what} (searched "
                          "recursively). Point it at the directory that holds them.")
    return files


def pair_files(images: Dict[str, str], masks: Dict[str, str], image_key: str,
               mask_key: str, suffix: str) -> List[Pair]:
    """Pairs sorted by stem; FolderError listing the first unpaired files of each side."""
    lonely_images = sorted(set(images) - set(masks))
    lonely_masks = sorted(set(masks) - set(images))
    if lonely_images or lonely_masks:
        parts = []
        if lonely_images:
            parts.append(f"{len(lonely_images)} image(s) of config.folder.{image_key} have no "
                         f"mask: {_quote([images[s] for s in lonely_images])}")
        if lonely_masks:
            parts.append(f"{len(lonely_masks)} mask(s) of config.folder.{mask_key} have no "
                         f"image: {_quote([masks[s] for s in lonely_masks])}")
        raise FolderError(
            "; ".join(parts) + f". Images and masks pair by their path below the directory "
            f"without extension (mask suffix {suffix!r}: set config.folder.mask_suffix if the "
            "masks are named e.g. <stem>_mask.png); add the missing files or remove the extra.")
    return [Pair(stem, images[stem], masks[stem]) for stem in sorted(images)]


def read_list(path: str) -> List[str]:
    """The stems of a VOC-style id list (one a line)."""
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def select(pairs: Sequence[Pair], stems: Sequence[str], list_path: str) -> List[Pair]:
    """The pairs of the stems that `list_path` names, in the list's (sorted) order."""
    by_stem = {pair.stem: pair for pair in pairs}
    missing = [s for s in stems if s not in by_stem]
    if missing:
        raise FolderError(f"{list_path} names {len(missing)} id(s) with no image and mask pair: "
                          f"{_quote(missing)}; fix the list or add the files.")
    return [by_stem[s] for s in sorted(set(stems))]


def hold_out(pairs: Sequence[Pair], fraction: float) -> Tuple[List[Pair], List[Pair]]:
    """(train, held out): the round(fraction · n) pairs first in SHA-256 order of their stem.

    The choice depends only on the stems, not on the file order or any library version, and
    adding a file moves no other file across the split.
    """
    if not 0.0 < fraction < 1.0:
        raise FolderError(f"config.folder.eval_fraction={fraction} must lie in (0, 1) when "
                          "config.folder.eval_images is empty.")
    if len(pairs) < 2:
        raise FolderError(f"Only {len(pairs)} image/mask pair(s): holding out "
                          "config.folder.eval_fraction of them leaves nothing to train or "
                          "evaluate on. Add images or set config.folder.eval_images.")
    count = min(len(pairs) - 1, max(1, round(fraction * len(pairs))))
    ranked = sorted(pairs, key=lambda p: hashlib.sha256(p.stem.encode("utf-8")).hexdigest())
    held = {p.stem for p in ranked[:count]}
    return ([p for p in pairs if p.stem not in held], [p for p in pairs if p.stem in held])


def split_pairs(folder) -> Dict[str, List[Pair]]:
    """{"train": pairs, "validation": pairs} of `config.folder`."""
    directories = resolve_directories(folder)
    suffix = folder.mask_suffix

    def pairs_of(image_dir: str, mask_dir: str, image_key: str, mask_key: str) -> List[Pair]:
        images = list_files(image_dir, IMAGE_EXTENSIONS, image_key)
        masks = list_files(mask_dir, MASK_EXTENSIONS, mask_key, suffix)
        if directories.images_without_masks_skipped:
            images = {stem: path for stem, path in images.items() if stem in masks}
        return pair_files(images, masks, image_key, mask_key, suffix)

    train = pairs_of(directories.train_images, directories.train_masks, "train_images",
                     "train_masks")
    if directories.eval_list and not directories.eval_images:
        everything = train
        train = (select(everything, read_list(directories.train_list), directories.train_list)
                 if directories.train_list else
                 [p for p in everything
                  if p.stem not in set(read_list(directories.eval_list))])
        return {"train": train, "validation": select(
            everything, read_list(directories.eval_list), directories.eval_list)}
    if directories.train_list:
        train = select(train, read_list(directories.train_list), directories.train_list)
    if directories.eval_images:
        return {"train": train,
                "validation": pairs_of(directories.eval_images, directories.eval_masks,
                                       "eval_images", "eval_masks")}
    train, held = hold_out(train, folder.eval_fraction)
    return {"train": train, "validation": held}


def list_images(directory: str) -> List[Tuple[str, str]]:
    """(stem, path) of every image under `directory`, sorted by stem (unlabeled images)."""
    return sorted(list_files(directory, IMAGE_EXTENSIONS, "unlabeled_images").items())


def fingerprint(files: Sequence[str], settings: dict) -> str:
    """A short hash of the files' paths, sizes and modification times, and of `settings`.

    It names the built dataset, so a changed folder (or class list, void value, ...) builds a
    new one instead of reading a stale cache.
    """
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8"))
    for path in files:
        stat = os.stat(path)
        digest.update(f"{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
                      .encode("utf-8"))
    return digest.hexdigest()[:16]
