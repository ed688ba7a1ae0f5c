"""segmentation_folder on real photographs (../shared/data): the 100 VOC images as a VOC-style
folder, and Stanford Background written out as an index-PNG folder with void 0, which must give
exactly the `stanford_background` builder's examples."""

import io
import os
import pathlib

import numpy as np
from PIL import Image
import pytest
from etils import epath

from advseg_jax.configs import folder as folder_config
from advseg_jax.data import builder_io
from advseg_jax.data import dataset_info
from advseg_jax.data import stanford_background
from advseg_jax.data.class_info import STANFORD_BACKGROUND_CLASSES, VOC_CLASSES
from experiments import stanford_folder
from dataset_records import records

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"
VOC = SHARED / "voc2012_subset100" / "VOC2012"
STANFORD = SHARED / "stanford_background"


def _build(config):
    builder = dataset_info.builder(config)
    builder_io.prepare(builder, config.data_dir)
    return dataset_info.builder(config)


def _examples(builder, split):
    return {ex["image/filename"].decode(): ex
            for ex in records(builder, split)}


@pytest.mark.skipif(not VOC.is_dir(), reason=f"real VOC images not found in {VOC}")
def test_voc_folder_with_lists_reads_palette_masks_by_index(tmp_path):
    root = tmp_path / "VOC2012"
    root.mkdir()
    for name in ("JPEGImages", "SegmentationClass"):
        os.symlink(VOC / name, root / name)
    ids = sorted(p.stem for p in (VOC / "SegmentationClass").glob("*.png"))
    assert len(ids) == 100
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("\n".join(ids[:80]) + "\n")
    (lists / "val.txt").write_text("\n".join(ids[80:]) + "\n")
    config = folder_config.get_config()
    config.data_dir = str(tmp_path / "tfds")
    config.folder.root = str(root)
    config.folder.class_names = ",".join(VOC_CLASSES)
    builder = _build(config)
    assert dataset_info.class_names(builder) == VOC_CLASSES
    examples = {split: _examples(builder, split) for split in ("train", "validation")}
    assert sorted(examples["train"]) == [f"{i}.jpg" for i in ids[:80]]
    assert sorted(examples["validation"]) == [f"{i}.jpg" for i in ids[80:]]
    void_seen = False
    for split in examples.values():
        for filename, example in split.items():
            stem = filename[:-len(".jpg")]
            mask_path = epath.Path(VOC / "SegmentationClass" / f"{stem}.png")
            labels = builder_io.read_index_png(mask_path)
            np.testing.assert_array_equal(example["segmentation_mask"][..., 0], labels)
            jpeg = (VOC / "JPEGImages" / filename).read_bytes()
            with Image.open(io.BytesIO(jpeg)) as decoded:  # The pipeline decodes with PIL.
                np.testing.assert_array_equal(example["image"],
                                              np.asarray(decoded.convert("RGB")))
            void_seen |= bool((labels == 255).any())
    assert void_seen


@pytest.mark.skipif(not VOC.is_dir(), reason=f"real VOC images not found in {VOC}")
def test_voc_folder_without_lists_holds_out_a_tenth(tmp_path):
    config = folder_config.get_config()
    config.data_dir = str(tmp_path / "tfds")
    config.folder.root = str(VOC)  # JPEGImages/ + SegmentationClass/, no train/val lists.
    config.folder.class_names = ",".join(VOC_CLASSES)
    builder = _build(config)
    assert builder.info.splits["train"].num_examples == 90
    assert builder.info.splits["validation"].num_examples == 10
    held = dict(builder.info.metadata.items())["files"]["validation"]
    assert sorted(f"{s}.jpg" for s in held) == sorted(_examples(builder, "validation"))


@pytest.fixture(scope="module")
def stanford_pair(tmp_path_factory, stanford_real_data_dir):
    """(stanford_background/fold0 builder, the same images as a folder with void 0)."""
    archive = STANFORD / stanford_background.ARCHIVE.filename
    if not archive.is_file():
        pytest.skip(f"real Stanford Background archive not found in {STANFORD}")
    base = tmp_path_factory.mktemp("stanford_real")
    reference = stanford_background.StanfordBackground(  # Prepared by the conftest fixture.
            data_dir=stanford_real_data_dir, config="fold0", file_format="array_record")
    assert reference.is_prepared()
    counts = stanford_folder.write_stanford_folder(str(archive), str(base / "folder"),
                                                   void_label=0, fold=0)
    assert counts == {"train": 572, "val": 143}
    config = folder_config.get_config()
    config.data_dir = str(base / "tfds_folder")
    config.folder.root = str(base / "folder")  # images/{train,val}/ + masks/{train,val}/
    config.folder.class_names = str(base / "folder" / "class_names.txt")
    config.folder.void_label = 0
    return reference, _build(config)


@pytest.mark.parametrize("split, folder_split", [("train", "train"), ("test", "validation")])
def test_stanford_folder_gives_exactly_the_builder_s_examples(stanford_pair, split, folder_split):
    reference, folder = stanford_pair
    expected, actual = _examples(reference, split), _examples(folder, folder_split)
    assert len(expected) == {"train": 572, "test": 143}[split]
    assert sorted(actual) == sorted(expected)
    for filename, example in expected.items():
        np.testing.assert_array_equal(actual[filename]["image"], example["image"])
        np.testing.assert_array_equal(actual[filename]["segmentation_mask"],
                                      example["segmentation_mask"])


def test_stanford_folder_metadata_names_the_classes(stanford_pair):
    reference, folder = stanford_pair
    assert dataset_info.class_names(folder) == dataset_info.class_names(reference) == \
        STANFORD_BACKGROUND_CLASSES
    metadata = dict(folder.info.metadata.items())
    assert metadata["source_void_label"] == 0
    stats = metadata["statistics"]["validation"]
    masks = [ex["segmentation_mask"] for ex in _examples(reference, "test").values()]
    counts = np.bincount(np.concatenate([m.ravel() for m in masks]), minlength=256)
    assert stats["class_pixels"] == counts[:8].tolist() and stats["void_pixels"] == counts[255]
