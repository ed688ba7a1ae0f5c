"""A folder dataset's classes and masks: names, colours, void, and mask files → class ids.

Mask values name classes in increasing order with the void value left out: with void 255 (the
default) value v is class v; with void 0 ("unlabelled", as in ADE20K) value 1 is the first
name; with void = the last index nothing shifts. So `class_names` lists exactly the classes a
model is to predict, never a placeholder for the void value. Every mask is decoded at build
time and any value, colour or mode that fits none of this is an error naming the file, the value
and its pixel count, and the key to change.
"""

import dataclasses
import io
import os
import re
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from advseg_jax.data.class_info import IGNORE_LABEL
from advseg_jax.data.folder_files import FolderError

VOID_NAME = "void"  # In a colours file: colours that mean "ignore".
_LISTED = 5
_COLOUR_LINE = re.compile(r"^\s*(\d{1,3})[\s,]+(\d{1,3})[\s,]+(\d{1,3})[\s,:]+(\S.*?)\s*$")
_JPEG_END = b"\xff\xd9"
_PNG_END = b"IEND\xaeB`\x82"


def parse_class_names(value: str) -> Tuple[str, ...]:
    """Names from `config.folder.class_names`: a text file (one a line) or comma-separated."""
    path = os.path.expanduser(value)
    if os.path.isfile(path):
        with open(path) as f:
            names = [line.strip() for line in f if line.strip()]
        where = f"file {path}"
    else:
        names = [name.strip() for name in value.split(",")]
        where = f"config.folder.class_names={value!r}"
        if "" in names:
            raise FolderError(f"{where} has an empty name (or is neither a file nor a "
                              "comma-separated list): give e.g. 'road,car,sky' or a file path.")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise FolderError(f"{where} names {duplicates} more than once; class names must differ.")
    if not 1 <= len(names) <= IGNORE_LABEL - 1:
        raise FolderError(f"{where} has {len(names)} names; between 1 and {IGNORE_LABEL - 1} "
                          "classes fit in uint8 masks beside void.")
    return tuple(names)


def read_colors(path: str, class_names: Sequence[str]) -> Tuple[Tuple[str, ...],
                                                                Dict[Tuple[int, int, int], int]]:
    """(class names, {RGB: class id or 255}) from a colours file: `R G B name` a line.

    With no `class_names`, the file's names (void excepted) in order are the classes.
    """
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise FolderError(f"config.folder.colors={path!r} is not a file; give a text file with "
                          "one 'R G B name' line per class colour.")
    entries = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            match = _COLOUR_LINE.match(line)
            if not match or max(int(v) for v in match.groups()[:3]) > 255:
                raise FolderError(f"{path} line {number}: {line.strip()!r} is not "
                                  "'R G B name' with R, G, B in 0..255.")
            entries.append((tuple(int(v) for v in match.groups()[:3]), match.group(4), number))
    names = tuple(class_names) or tuple(dict.fromkeys(n for _, n, _ in entries if n != VOID_NAME))
    colours: Dict[Tuple[int, int, int], int] = {}
    for colour, name, number in entries:
        if name != VOID_NAME and name not in names:
            raise FolderError(f"{path} line {number}: class {name!r} is not one of "
                              f"config.folder.class_names {list(names)} (nor {VOID_NAME!r}).")
        if colour in colours:
            raise FolderError(f"{path} line {number}: colour {colour} is listed twice.")
        colours[colour] = IGNORE_LABEL if name == VOID_NAME else names.index(name)
    if not names:
        raise FolderError(f"{path} lists no class colours.")
    return names, colours


def palette(class_names: Sequence[str], colours: Optional[Dict[Tuple[int, int, int], int]],
            base: np.ndarray) -> np.ndarray:
    """[256, 3] uint8: the user's colour for each class (first listed wins), else `base`'s."""
    result = np.array(base, np.uint8)
    seen = set()
    for colour, label in (colours or {}).items():
        if label not in seen:
            result[label] = colour
            seen.add(label)
    return result


@dataclasses.dataclass(frozen=True)
class MaskDecoder:
    """Turns a mask file into class ids 0..num_classes-1 and 255 (void)."""
    num_classes: int
    void_label: int = IGNORE_LABEL
    colours: Optional[Dict[Tuple[int, int, int], int]] = None

    def lookup(self, largest: int) -> np.ndarray:
        """Index value → class id (void → 255; invalid values → -1), for values 0..largest."""
        values = np.arange(largest + 1)
        labels = values - (values > self.void_label)
        labels = np.where((labels >= 0) & (labels < self.num_classes), labels, -1)
        if self.void_label <= largest:
            labels[self.void_label] = IGNORE_LABEL
        return labels

    def valid_values(self) -> str:
        void = self.void_label
        low = 1 if void == 0 else 0
        high = self.num_classes - 1 + (1 if void < self.num_classes else 0)
        return f"{low}..{high}" + (f" except {void}" if low < void < high else "")

    def decode(self, path: str) -> np.ndarray:
        """uint8 [H, W] class ids of the mask at `path`; FolderError naming it on any fault."""
        try:
            with open(path, "rb") as f:
                data = f.read()
            with Image.open(io.BytesIO(data)) as image:
                image.load()  # A truncated or corrupt file fails here.
                mode = image.mode
                pixels = np.array(image)
        except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, ...
            raise FolderError(f"Cannot read mask {path}: {error}. The file is truncated or not "
                              "an image: export it again (PNG, BMP or TIFF).") from error
        if mode in ("RGB", "RGBA"):
            rgb = pixels[..., :3]
            if self.colours is not None:
                return self._from_colours(rgb, path)
            if not (np.array_equal(rgb[..., 0], rgb[..., 1])
                    and np.array_equal(rgb[..., 0], rgb[..., 2])):
                raise FolderError(
                    f"Mask {path} is a colour ({mode}) image, not an index image. Set "
                    "config.folder.colors to a file of 'R G B name' lines mapping its colours to "
                    "class names (or save the masks as palette or greyscale PNGs of class ids).")
            pixels = rgb[..., 0]
        elif mode == "LA":
            pixels = pixels[..., 0]
        elif mode not in ("P", "L", "1", "I", "I;16", "I;16B", "I;16L"):
            raise FolderError(f"Mask {path} has image mode {mode!r}; expected class ids as a "
                              "palette, greyscale or 16-bit image, or colours (with "
                              "config.folder.colors).")
        return self._from_indices(np.asarray(pixels).astype(np.int64), path)

    def _from_indices(self, values: np.ndarray, path: str) -> np.ndarray:
        if values.size and values.min() < 0:
            raise FolderError(f"Mask {path} has negative values; class ids are >= 0.")
        largest = int(values.max()) if values.size else 0
        lookup = self.lookup(largest)
        counts = np.bincount(values.ravel(), minlength=largest + 1)
        bad = np.flatnonzero((lookup < 0) & (counts > 0))
        if bad.size:
            found = ", ".join(f"{v} ({counts[v]} pixels)" for v in bad[:_LISTED])
            raise FolderError(
                f"Mask {path} has value(s) {found}, neither one of the {self.num_classes} "
                f"classes (values {self.valid_values()}) nor void ({self.void_label}). If they "
                "are classes, config.folder.class_names lacks names for them (the masks hold "
                f"more classes than its {self.num_classes} names); if they mean 'ignore', set "
                f"config.folder.void_label to that value.")
        return lookup[values].astype(np.uint8)

    def _from_colours(self, rgb: np.ndarray, path: str) -> np.ndarray:
        keys = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) \
            | rgb[..., 2]
        unique, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        table = {r << 16 | g << 8 | b: v for (r, g, b), v in self.colours.items()}
        labels = np.array([table.get(int(k), -1) for k in unique])
        unknown = np.flatnonzero(labels < 0)
        if unknown.size:
            order = unknown[np.argsort(-counts[unknown])]
            found = ", ".join(f"({unique[i] >> 16}, {(unique[i] >> 8) & 255}, {unique[i] & 255}) "
                              f"{counts[i]} pixels" for i in order[:_LISTED])
            raise FolderError(
                f"Mask {path} has {unknown.size} colour(s) that config.folder.colors does not "
                f"map: {found}. Add them to the colours file as classes, or as '{VOID_NAME}' to "
                "ignore them.")
        return labels[inverse.reshape(keys.shape)].astype(np.uint8)


def probe_image(path: str) -> Tuple[int, int]:
    """(height, width) of an image from its header; FolderError if unreadable or truncated.

    JPEG and PNG files are checked for their end marker (a cut-off download lacks it) without
    decoding; a file without one, and other formats, are decoded to be sure.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            image_format = image.format
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 64))
            tail = f.read()
        complete = {"JPEG": _JPEG_END in tail, "PNG": tail.endswith(_PNG_END)}.get(image_format)
        if not complete:
            with Image.open(path) as image:
                image.load()
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, ...
        raise FolderError(f"Cannot read image {path}: {error}. The file is truncated or not an "
                          "image: copy or export it again, or remove it with its mask.") from error
    return height, width
