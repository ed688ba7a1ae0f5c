"""voc2012_segmentation on the dummy archives: TFDS conformance, split rules, masks, bad data."""

import io
import pathlib
import shutil
import socket
import tarfile
from unittest import mock

import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds
from PIL import Image

from advseg_jax import prepare_data
from advseg_jax.data import builder_io
from advseg_jax.data import voc2012_segmentation as voc
from advseg_jax.data.class_info import IGNORE_LABEL
from advseg_jax.data.dummy_data import make_dummy_data as dummy
from dataset_records import records

DUMMY_DIR = dummy.DUMMY_DIR / "voc2012_segmentation"
SPLITS = {"train": 3, "validation": 2, "train_aug": 5}
# Written out, not recomputed: VOC train ∪ SBD train ∪ SBD val − VOC val (make_dummy_data).
TRAIN_AUG_FROM_VOC = {"2007_000032", "2007_000039", "2008_000008"}
TRAIN_AUG_FROM_SBD = {"2008_000015", "2008_000032"}


class Voc2012SegmentationTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = voc.Voc2012Segmentation
    EXAMPLE_DIR = str(DUMMY_DIR)  # Doubles as manual_dir: the builder reads the archives there.
    SPLITS = SPLITS
    OVERLAPPING_SPLITS = ["train_aug"]  # It contains VOC train by definition.


def _build(data_dir: pathlib.Path, manual_dir: pathlib.Path) -> tfds.core.DatasetBuilder:
    builder = voc.Voc2012Segmentation(data_dir=str(data_dir))
    builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder


def _examples(builder, split):
    return {ex["image/filename"].decode(): ex
            for ex in records(builder, split)}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    builder = _build(tmp_path_factory.mktemp("tfds"), DUMMY_DIR)
    return {split: _examples(builder, split) for split in SPLITS}


def _ids(examples):
    return {name[:-len(".jpg")] for name in examples}


def test_split_membership(built):
    assert _ids(built["train"]) == set(dummy.VOC_TRAIN)
    assert _ids(built["validation"]) == set(dummy.VOC_VAL)
    assert _ids(built["train_aug"]) == TRAIN_AUG_FROM_VOC | TRAIN_AUG_FROM_SBD
    assert not _ids(built["train_aug"]) & set(dummy.VOC_VAL)
    assert "2007_000027" not in set().union(*map(_ids, built.values()))  # JPEG without a mask.


def test_train_aug_takes_voc_mask_where_voc_has_one(built):
    for image_id in TRAIN_AUG_FROM_VOC:
        mask = built["train_aug"][f"{image_id}.jpg"]["segmentation_mask"][..., 0]
        np.testing.assert_array_equal(mask, dummy.voc_mask(image_id))
    for image_id in TRAIN_AUG_FROM_SBD:
        mask = built["train_aug"][f"{image_id}.jpg"]["segmentation_mask"][..., 0]
        np.testing.assert_array_equal(mask, dummy.sbd_mask(image_id))
    # The overlap ids really have different SBD masks, so the check above can tell them apart.
    for image_id in ("2007_000032", "2007_000039"):
        assert not np.array_equal(dummy.voc_mask(image_id), dummy.sbd_mask(image_id))


def test_palette_masks_decode_to_class_ids_with_void(built):
    for split in ("train", "validation"):
        for name, example in built[split].items():
            mask = example["segmentation_mask"]
            assert mask.shape[-1] == 1 and mask.dtype == np.uint8
            np.testing.assert_array_equal(mask[..., 0], dummy.voc_mask(name[:-4]))
            assert (mask == IGNORE_LABEL).any()


def test_images_match_their_ids(built):
    for examples in built.values():
        for name, example in examples.items():
            expected = dummy.make_image(name[:-4]).astype(float)
            assert example["image"].shape == expected.shape
            assert np.abs(example["image"] - expected).mean() < 4  # JPEG, lossy.


def test_split_sources_rules():
    sources = voc.split_sources(voc_train=["a", "b", "b"], voc_val=["c"],
                                sbd_train=["b", "c", "d"], sbd_val=["a", "e"])
    assert sources["train"] == [("a", "voc"), ("b", "voc")]
    assert sources["validation"] == [("c", "voc")]
    assert sources["train_aug"] == [("a", "voc"), ("b", "voc"), ("d", "sbd"), ("e", "sbd")]


def _fake_download(urls):
    by_url = {voc.VOC_ARCHIVE.url: voc.VOC_ARCHIVE.filename,
              voc.SBD_ARCHIVE.url: voc.SBD_ARCHIVE.filename}
    return {key: DUMMY_DIR / by_url[url] for key, url in urls.items()}


def test_downloads_only_archives_missing_from_manual_dir(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    shutil.copy(DUMMY_DIR / voc.VOC_ARCHIVE.filename, manual)
    with mock.patch.object(tfds.download.DownloadManager, "download",
                           side_effect=_fake_download) as download, \
            mock.patch.object(builder_io, "server_reachable", return_value=True):
        builder = _build(tmp_path / "tfds", manual)
    download.assert_called_once_with({"sbd": voc.SBD_ARCHIVE.url})
    assert {s: builder.info.splits[s].num_examples for s in SPLITS} == SPLITS


def test_a_failed_download_says_what_to_download(tmp_path):
    with mock.patch.object(tfds.download.DownloadManager, "download",
                           side_effect=ConnectionError("no network")), \
            mock.patch.object(builder_io, "server_reachable", return_value=True):
        with pytest.raises(FileNotFoundError) as error:
            _build(tmp_path / "tfds", tmp_path / "empty_manual")
    message = str(error.value)
    for archive in (voc.VOC_ARCHIVE, voc.SBD_ARCHIVE):
        assert archive.filename in message and archive.url in message
    assert str(tmp_path / "empty_manual") in message and "no network" in message


def test_unreachable_servers_fail_at_once_naming_each_file_and_where_to_put_it(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    shutil.copy(DUMMY_DIR / voc.SBD_ARCHIVE.filename, manual)  # Only VOC's tar is missing.
    with mock.patch.object(tfds.download.DownloadManager, "download") as download, \
            mock.patch.object(builder_io, "server_reachable", return_value=False):
        with pytest.raises(FileNotFoundError) as error:
            prepare_data.prepare("voc2012_segmentation", str(tmp_path / "tfds"), str(manual))
    download.assert_not_called()  # No retries: they took minutes.
    message = str(error.value)
    assert voc.VOC_ARCHIVE.filename in message and voc.VOC_ARCHIVE.url in message
    assert voc.SBD_ARCHIVE.filename not in message
    assert f"put them, unextracted, in the manual directory {manual}" in message
    assert "host.robots.ox.ac.uk cannot be reached" in message
    assert not (tmp_path / "tfds" / "voc2012_segmentation").exists()  # Nothing half-built.


def test_server_reachable_tells_an_open_port_from_a_closed_one():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        assert builder_io.server_reachable(f"http://127.0.0.1:{port}/file.tar")
    assert not builder_io.server_reachable(f"http://127.0.0.1:{port}/file.tar")


def test_truncated_archive_is_named_and_nothing_half_built_remains(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    data = (DUMMY_DIR / voc.VOC_ARCHIVE.filename).read_bytes()
    (manual / voc.VOC_ARCHIVE.filename).write_bytes(data[:len(data) // 2])
    shutil.copy(DUMMY_DIR / voc.SBD_ARCHIVE.filename, manual)
    data_dir = tmp_path / "tfds"
    with pytest.raises(ValueError, match=f"Archive .*{voc.VOC_ARCHIVE.filename} .* is truncated "
                                         "or corrupt.*Download it again"):
        prepare_data.prepare("voc2012_segmentation", str(data_dir), str(manual))
    leftovers = [str(p.relative_to(data_dir)) for p in data_dir.rglob("*")]
    assert leftovers in ([], ["downloads"], ["downloads", "downloads/extracted"]), leftovers
    # With the good archive, the same data_dir builds (no stale partial extraction is reused).
    shutil.copy(DUMMY_DIR / voc.VOC_ARCHIVE.filename, manual)
    builder = prepare_data.prepare("voc2012_segmentation", str(data_dir), str(manual))
    assert {s: builder.info.splits[s].num_examples for s in SPLITS} == SPLITS


def _manual_dir_with(tmp_path, voc_overrides=None, sbd_overrides=None) -> pathlib.Path:
    manual = tmp_path / "manual"
    dummy.write_archive(manual / dummy.VOC_TAR, {**dummy.voc_members(), **(voc_overrides or {})})
    dummy.write_archive(manual / dummy.SBD_TGZ, {**dummy.sbd_members(), **(sbd_overrides or {})})
    return manual


_VOC = dummy.VOC_ROOT
_SBD = dummy.SBD_ROOT


@pytest.mark.parametrize("voc_overrides, sbd_overrides, expected", [
        ({f"{_VOC}/JPEGImages/2008_000008.jpg": b"not a jpeg"}, None,
         ["2008_000008.jpg"]),
        ({f"{_VOC}/SegmentationClass/2007_000039.png": b"\x89PNG truncated"}, None,
         ["2007_000039.png"]),
        ({f"{_VOC}/SegmentationClass/2007_000032.png":
          dummy.encode_palette_png(np.full((30, 40), 50, np.uint8))}, None,
         ["2007_000032.png", "class id(s) [50]"]),
        (None, {f"{_SBD}/cls/2008_000015.mat": b"MATLAB garbage"}, ["2008_000015.mat"]),
        (None, {f"{_SBD}/cls/2008_000032.mat":
                dummy.encode_sbd_mat(np.full((30, 40), 21, np.uint8))},
         ["2008_000032.mat", "class id(s) [21]"]),
        (None, {f"{_SBD}/cls/2008_000032.mat":
                dummy.encode_sbd_mat(np.zeros((10, 10), np.uint8))},
         ["2008_000032.jpg", "2008_000032.mat"]),
], ids=["corrupt_jpeg", "corrupt_png", "voc_class_50", "corrupt_mat", "sbd_class_21",
        "size_mismatch"])
def test_bad_files_are_named(tmp_path, voc_overrides, sbd_overrides, expected):
    manual = _manual_dir_with(tmp_path, voc_overrides, sbd_overrides)
    with pytest.raises(ValueError) as error:
        _build(tmp_path / "tfds", manual)
    for text in expected:
        assert text in str(error.value)


def test_committed_archives_match_make_dummy_data():
    """Guards against editing make_dummy_data without re-running it."""
    for filename, members in ((dummy.VOC_TAR, dummy.voc_members()),
                              (dummy.SBD_TGZ, dummy.sbd_members())):
        with tarfile.open(DUMMY_DIR / filename) as tar:
            stored = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
        assert set(stored) == set(members)
        for name in stored:  # Decoded: compressed bytes depend on the zlib/libjpeg build.
            if name.endswith(".txt"):
                assert stored[name] == members[name], name
            elif name.endswith(".png"):
                np.testing.assert_array_equal(_png(stored[name]), _png(members[name]))
            elif name.endswith(".mat"):
                np.testing.assert_array_equal(_mat(stored[name]), _mat(members[name]))


def _png(data):
    return np.asarray(Image.open(io.BytesIO(data)))


def _mat(data):
    return scipy.io.loadmat(io.BytesIO(data), squeeze_me=True,
                            struct_as_record=False)["GTcls"].Segmentation
