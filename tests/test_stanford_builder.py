"""stanford_background on the dummy archive: TFDS conformance, folds, -1 → void, bad data."""

import hashlib
import pathlib
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds

from advseg_jax.data import builder_io
from advseg_jax.data import stanford_background as stanford
from advseg_jax.data.class_info import IGNORE_LABEL
from advseg_jax.data.dummy_data import make_dummy_data as dummy
from dataset_records import records

DUMMY_DIR = dummy.DUMMY_DIR / "stanford_background"
ALL_IDS = set(dummy.STANFORD_IDS)


class StanfordBackgroundTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = stanford.StanfordBackground
    EXAMPLE_DIR = str(DUMMY_DIR)  # Doubles as manual_dir.
    SPLITS = {"train": 8, "test": 2}  # 10 ids, 5 folds: every config.


def _build(data_dir: pathlib.Path, manual_dir: pathlib.Path, fold: int = 0):
    builder = stanford.StanfordBackground(data_dir=str(data_dir), config=f"fold{fold}")
    builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder


def _examples(builder, split):
    return {ex["image/filename"].decode()[:-len(".jpg")]: ex
            for ex in records(builder, split)}


@pytest.fixture(scope="module")
def folds(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    return [{split: _examples(_build(data_dir, DUMMY_DIR, k), split) for split in ("train", "test")}
            for k in range(stanford.NUM_FOLDS)]


def test_test_folds_partition_all_ids_exactly_once(folds):
    test_ids = [i for fold in folds for i in fold["test"]]
    assert sorted(test_ids) == sorted(ALL_IDS)
    for fold in folds:
        assert not set(fold["train"]) & set(fold["test"])
        assert set(fold["train"]) | set(fold["test"]) == ALL_IDS


def test_assign_folds_follows_the_documented_rule():
    ids = [f"{i:07d}" for i in range(715)]  # The real dataset's size.
    folds = stanford.assign_folds(ids[::-1])  # Input order must not matter.
    assert sorted(folds) == ids
    assert np.bincount(list(folds.values())).tolist() == [143] * 5
    ranked = sorted(ids, key=lambda i: hashlib.sha256(i.encode()).hexdigest())
    assert all(folds[image_id] == rank % 5 for rank, image_id in enumerate(ranked))
    assert folds == stanford.assign_folds(ids)


def test_unknown_becomes_void_and_labels_are_kept(folds):
    for fold in folds:
        for image_id, example in fold["test"].items():
            regions = dummy.stanford_regions(image_id)
            expected = np.where(regions == -1, IGNORE_LABEL, regions)
            np.testing.assert_array_equal(example["segmentation_mask"][..., 0], expected)
            assert (example["segmentation_mask"] == IGNORE_LABEL).any()
            image = dummy.make_image(image_id).astype(float)
            assert np.abs(example["image"] - image).mean() < 4


def test_no_archive_and_no_network_says_what_to_download(tmp_path):
    with mock.patch.object(tfds.download.DownloadManager, "download",
                           side_effect=ConnectionError("no network")):
        with pytest.raises(FileNotFoundError) as error:
            _build(tmp_path / "tfds", tmp_path / "empty_manual")
    assert stanford.ARCHIVE.filename in str(error.value)
    assert stanford.ARCHIVE.url in str(error.value)


def test_download_is_used_without_manual_archive(tmp_path):
    # The server counts as reachable (this machine has no internet): the download is used.
    with mock.patch.object(tfds.download.DownloadManager, "download",
                           return_value={"data": DUMMY_DIR / stanford.ARCHIVE.filename}) as dl, \
            mock.patch.object(builder_io, "server_reachable", return_value=True):
        builder = _build(tmp_path / "tfds", tmp_path / "empty_manual", fold=3)
    dl.assert_called_once_with({"data": stanford.ARCHIVE.url})
    assert builder.info.splits["test"].num_examples == 2


_LABELS = f"{dummy.STANFORD_ROOT}/labels/0000047.regions.txt"


@pytest.mark.parametrize("overrides, expected", [
        ({_LABELS: b"0 1 9\n0 1 2\n"}, ["0000047.regions.txt", "class id(s) [9]"]),
        ({_LABELS: b"0 1 -3\n0 1 2\n"}, ["0000047.regions.txt", "class id(s) [-3]"]),
        ({_LABELS: b"0 1 2\n0 1\n"}, ["0000047.regions.txt"]),
        ({_LABELS: b"0 1 2\n0 1 x\n"}, ["0000047.regions.txt"]),
        ({_LABELS: b"0 1 2\n0 1 2\n"}, ["0000047.jpg", "0000047.regions.txt"]),  # Size.
        ({f"{dummy.STANFORD_ROOT}/images/0000047.jpg": b"\xff\xd8 truncated"},
         ["0000047.jpg"]),
], ids=["class_9", "class_minus_3", "ragged", "not_int", "size_mismatch", "corrupt_jpeg"])
def test_bad_files_are_named(tmp_path, overrides, expected):
    manual = tmp_path / "manual"
    dummy.write_archive(manual / dummy.STANFORD_TGZ, {**dummy.stanford_members(), **overrides})
    with pytest.raises(ValueError) as error:
        _build(tmp_path / "tfds", manual)
    for text in expected:
        assert text in str(error.value)
