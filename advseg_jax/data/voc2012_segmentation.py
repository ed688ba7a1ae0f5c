"""`voc2012_segmentation`: PASCAL VOC 2012 semantic segmentation, with SBD's extra masks.

21 classes (background + 20 objects, names in `class_info.VOC_CLASSES`); 255 is void (object
outlines and difficult regions) and is kept in the masks.

Splits:
    train       VOC2012 `ImageSets/Segmentation/train.txt` (1464 images), VOC masks.
    validation  VOC2012 `ImageSets/Segmentation/val.txt` (1449 images), VOC masks. The
                standard evaluation set, since VOC's test masks are not public.
    train_aug   VOC train ∪ SBD train ∪ SBD val, minus every VOC val image (10582 images):
                the "augmented" training set of most VOC segmentation papers. An id with a VOC
                mask uses VOC's image and mask; an SBD-only id uses SBD's image and mask
                (`cls/<id>.mat`, struct `GTcls`, field `Segmentation`). Each id appears once.
                SBD masks have no void pixels.

Sources: VOC's `VOCtrainval_11-May-2012.tar` and SBD's `benchmark.tgz` (Hariharan et al. 2011).
Both are read from the manual directory when there, else downloaded from their official
servers. They are extracted (≈2 GB + 1.4 GB) under `<data_dir>/downloads/extracted`; that copy
can be deleted once the dataset is built.
"""

from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
import scipy.io
import tensorflow_datasets as tfds
from etils import epath

from advseg_jax.data import builder_io
from advseg_jax.data import class_info
from advseg_jax.data.class_info import VOC_CLASSES

VOC_ARCHIVE = builder_io.Archive(
        "VOCtrainval_11-May-2012.tar",
        "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar")
SBD_ARCHIVE = builder_io.Archive(
        "benchmark.tgz",
        "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/"
        "benchmark.tgz")
_VOC_ROOT = "VOCdevkit/VOC2012"
_SBD_ROOT = "benchmark_RELEASE/dataset"
NUM_CLASSES = len(VOC_CLASSES)

_CITATION = """\
@misc{pascal-voc-2012,
    author = "Everingham, M. and Van~Gool, L. and Williams, C. K. I. and Winn, J. and
              Zisserman, A.",
    title = "The {PASCAL} {V}isual {O}bject {C}lasses {C}hallenge 2012 {(VOC2012)} {R}esults",
    howpublished = "http://www.pascal-network.org/challenges/VOC/voc2012/workshop/index.html"}
@inproceedings{hariharan2011semantic,
    author = "Hariharan, Bharath and Arbel\\'aez, Pablo and Bourdev, Lubomir and Maji, Subhransu
              and Malik, Jitendra",
    title = "Semantic contours from inverse detectors",
    booktitle = "International Conference on Computer Vision (ICCV)",
    year = "2011"}
"""

# (image id, "voc" | "sbd": whose image and mask to use).
Source = Tuple[str, str]


def split_sources(voc_train: Sequence[str], voc_val: Sequence[str], sbd_train: Sequence[str],
                  sbd_val: Sequence[str]) -> Dict[str, List[Source]]:
    """The ids of each split and where each one's image and mask come from (module docstring)."""
    voc_masked = set(voc_train) | set(voc_val)
    aug_ids = (set(voc_train) | set(sbd_train) | set(sbd_val)) - set(voc_val)
    return {
            "train": [(i, "voc") for i in sorted(set(voc_train))],
            "validation": [(i, "voc") for i in sorted(set(voc_val))],
            "train_aug": [(i, "voc" if i in voc_masked else "sbd") for i in sorted(aug_ids)],
    }


def _read_ids(path: epath.Path) -> List[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_sbd_mask(path: epath.Path) -> np.ndarray:
    """Class ids [H, W] of an SBD `cls/<id>.mat` (struct GTcls, field Segmentation)."""
    try:
        with path.open("rb") as f:
            mat = scipy.io.loadmat(f, squeeze_me=True, struct_as_record=False)
        labels = np.asarray(mat["GTcls"].Segmentation)
    except Exception as error:  # scipy raises many types for a bad file.
        raise ValueError(f"Cannot read SBD mask {path} (expected a MATLAB struct GTcls with a "
                         f"field Segmentation): {error!r}") from error
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"SBD mask {path}: GTcls.Segmentation should be a 2-D integer array, "
                         f"got {labels.dtype} of shape {labels.shape}.")
    return labels


class Voc2012Segmentation(tfds.core.GeneratorBasedBuilder):
    """PASCAL VOC 2012 segmentation with SBD's train_aug split (see module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
            "1.0.0": "Initial release: train, validation (VOC2012) and train_aug (VOC + SBD).",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
    Optional: otherwise both files are downloaded from their official servers (slow, often down).
    Put these two files, unextracted, in the manual directory (--manual_dir of
    advseg_jax.prepare_data; default <data_dir>/downloads/manual):
      {VOC_ARCHIVE.filename}  from {VOC_ARCHIVE.url}
      {SBD_ARCHIVE.filename}  from {SBD_ARCHIVE.url}
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
                description=__doc__,
                features=builder_io.segmentation_features(),
                supervised_keys=("image", "segmentation_mask"),
                metadata=class_info.metadata(VOC_CLASSES),
                homepage="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/",
                citation=_CITATION,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        archives = builder_io.locate_archives(dl_manager,
                                              {"voc": VOC_ARCHIVE, "sbd": SBD_ARCHIVE})
        extracted = {name: builder_io.extract(dl_manager, path) for name, path in archives.items()}
        roots = {"voc": extracted["voc"] / _VOC_ROOT, "sbd": extracted["sbd"] / _SBD_ROOT}
        voc_lists = roots["voc"] / "ImageSets" / "Segmentation"
        sources = split_sources(
                voc_train=_read_ids(voc_lists / "train.txt"),
                voc_val=_read_ids(voc_lists / "val.txt"),
                sbd_train=_read_ids(roots["sbd"] / "train.txt"),
                sbd_val=_read_ids(roots["sbd"] / "val.txt"))
        return {split: self._generate_examples(items, roots) for split, items in sources.items()}

    def _generate_examples(self, items: List[Source],
                           roots: Dict[str, epath.Path]) -> Iterator[Tuple[str, dict]]:
        for image_id, source in items:
            if source == "voc":
                image_path = roots["voc"] / "JPEGImages" / f"{image_id}.jpg"
                mask_path = roots["voc"] / "SegmentationClass" / f"{image_id}.png"
                labels = builder_io.read_index_png(mask_path)
            else:
                image_path = roots["sbd"] / "img" / f"{image_id}.jpg"
                mask_path = roots["sbd"] / "cls" / f"{image_id}.mat"
                labels = read_sbd_mask(mask_path)
            image, size = builder_io.read_rgb_image(image_path)
            builder_io.check_labels(labels, NUM_CLASSES, mask_path)
            builder_io.check_same_size(size, labels, image_path, mask_path)
            yield image_id, {
                    "image": image,
                    "segmentation_mask": builder_io.encode_png(labels.astype(np.uint8)),
                    "image/filename": f"{image_id}.jpg",
            }
