"""segmentation_folder on tiny synthetic folders: decoding, void mapping, colours, metadata,
the unlabeled split, rebuilds on change, and every build-time error (fast, naming the file,
nothing left behind)."""

import os
import re
import time

import numpy as np
import pytest
from PIL import Image

from advseg_jax.configs import folder as folder_config
from advseg_jax.data import builder_io
from advseg_jax.data import class_info
from advseg_jax.data import dataset_info
from advseg_jax.data import segmentation_folder
from advseg_jax.data.folder_files import FolderError
from dataset_records import records

SIZE = (12, 16)


def _write_pair(root, stem, image, mask, image_ext=".png", mask_name=None):
    image_path = root / "images" / f"{stem}{image_ext}"
    mask_path = root / "masks" / (mask_name or f"{stem}.png")
    for path in (image_path, mask_path):
        os.makedirs(path.parent, exist_ok=True)
    Image.fromarray(image).save(image_path)
    (mask if isinstance(mask, Image.Image) else Image.fromarray(mask)).save(mask_path)
    return image_path, mask_path


def _index_folder(root, count=4, values=(0, 1, 2, 3), seed=0):
    rng = np.random.default_rng(seed)
    pairs = {}
    for i in range(count):
        image = rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
        mask = rng.choice(np.asarray(values, np.uint8), SIZE)
        _write_pair(root, f"s{i}", image, mask)
        pairs[f"s{i}"] = (image, mask)
    return pairs


def _config(root, data_dir, **folder):
    config = folder_config.get_config()
    config.data_dir = str(data_dir)
    config.folder.train_images = str(root / "images")
    config.folder.train_masks = str(root / "masks")
    config.folder.eval_fraction = 0.25
    config.folder.update(folder)
    return config


def _build(config):
    builder = dataset_info.builder(config)
    builder_io.prepare(builder, config.data_dir)
    return dataset_info.builder(config)


def _examples(builder):
    return {split: {ex["image/filename"].decode(): ex
                    for ex in records(builder, split)}
            for split in builder.info.splits}


def test_index_masks_with_void_0_map_to_classes_and_255(tmp_path):
    pairs = _index_folder(tmp_path / "data")
    builder = _build(_config(tmp_path / "data", tmp_path / "tfds", class_names="a,b,c",
                             void_label=0))
    examples = _examples(builder)
    assert {k: len(v) for k, v in examples.items()} == {"train": 3, "validation": 1}
    everything = {**examples["train"], **examples["validation"]}
    assert sorted(everything) == [f"s{i}.png" for i in range(4)]
    for stem, (image, mask) in pairs.items():
        example = everything[f"{stem}.png"]
        np.testing.assert_array_equal(example["image"], image)  # PNG images stay lossless.
        expected = np.where(mask == 0, 255, mask.astype(int) - 1)
        np.testing.assert_array_equal(example["segmentation_mask"][..., 0], expected)
    assert dataset_info.class_names(builder) == ("a", "b", "c")
    np.testing.assert_array_equal(dataset_info.palette(builder), class_info.voc_palette())
    metadata = dict(builder.info.metadata.items())
    assert metadata["source_void_label"] == 0
    assert sorted(metadata["files"]["train"] + metadata["files"]["validation"]) == sorted(pairs)
    train_masks = np.stack([pairs[s][1] for s in metadata["files"]["train"]])
    stats = metadata["statistics"]["train"]
    assert stats["class_pixels"] == [int((train_masks == v).sum()) for v in (1, 2, 3)]
    assert stats["void_pixels"] == int((train_masks == 0).sum())
    assert stats["min_size"] == list(SIZE) and stats["examples"] == 3


def test_void_last_index_and_class_names_file(tmp_path):
    pairs = _index_folder(tmp_path / "data", values=(0, 1, 2))
    names = tmp_path / "classes.txt"
    names.write_text("sky\n\nground\n")
    builder = _build(_config(tmp_path / "data", tmp_path / "tfds", class_names=str(names),
                             void_label=2))
    for split in _examples(builder).values():
        for filename, example in split.items():
            mask = pairs[filename[:-4]][1]
            np.testing.assert_array_equal(example["segmentation_mask"][..., 0],
                                          np.where(mask == 2, 255, mask))
    assert dataset_info.class_names(builder) == ("sky", "ground")


def test_palette_masks_are_read_by_index_not_colour(tmp_path):
    root = tmp_path / "data"
    rng = np.random.default_rng(1)
    masks = {}
    for i in range(2):
        values = rng.choice(np.array([0, 1, 255], np.uint8), SIZE)
        mask = Image.fromarray(values).convert("P")  # Pixel values stay the indices.
        mask.putpalette(np.random.default_rng(2).integers(0, 256, 768).tolist())  # Unrelated.
        _write_pair(root, f"p{i}", rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8), mask)
        masks[f"p{i}.png"] = values
    builder = _build(_config(root, tmp_path / "tfds", class_names="bg,fg", eval_fraction=0.5))
    for split in _examples(builder).values():
        for filename, example in split.items():
            np.testing.assert_array_equal(example["segmentation_mask"][..., 0], masks[filename])


def _colour_folder(root):
    colours = {(10, 20, 30): 0, (200, 0, 0): 1, (0, 0, 200): 2, (255, 255, 255): 255}
    rng = np.random.default_rng(3)
    labels = {}
    for i in range(3):
        ids = rng.choice(np.array(list(colours.values())), SIZE)
        rgb = np.zeros((*SIZE, 3), np.uint8)
        for colour, label in colours.items():
            rgb[ids == label] = colour
        _write_pair(root, f"c{i}", rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8), rgb,
                    image_ext=".jpg", mask_name=f"c{i}_color.png")
        labels[f"c{i}.jpg"] = ids
    (root / "colors.txt").write_text(
        "# R G B name\n10 20 30 sky\n200,0,0 road\n0 0 200: car\n255 255 255 void\n")
    return labels


def test_colour_masks_map_through_the_colours_file(tmp_path):
    root = tmp_path / "data"
    labels = _colour_folder(root)
    builder = _build(_config(root, tmp_path / "tfds", colors=str(root / "colors.txt"),
                             mask_suffix="_color", eval_fraction=0.34))
    assert dataset_info.class_names(builder) == ("sky", "road", "car")  # From the file.
    palette = dataset_info.palette(builder)
    assert palette[:3].tolist() == [[10, 20, 30], [200, 0, 0], [0, 0, 200]]
    assert palette[255].tolist() == [255, 255, 255]
    assert builder.info.features["image"].encoding_format == "jpeg"
    for split in _examples(builder).values():
        for filename, example in split.items():
            np.testing.assert_array_equal(example["segmentation_mask"][..., 0], labels[filename])


def test_unlabeled_split_has_all_void_masks_of_each_image_size(tmp_path):
    _index_folder(tmp_path / "data")
    unlabeled = tmp_path / "unlabeled"
    (unlabeled / "sub").mkdir(parents=True)
    rng = np.random.default_rng(4)
    shapes = {"u0.png": (9, 7), "sub/u1.png": (20, 11)}
    for name, shape in shapes.items():
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(unlabeled / name)
    builder = _build(_config(tmp_path / "data", tmp_path / "tfds", class_names="a,b,c",
                             void_label=0, unlabeled_images=str(unlabeled)))
    assert builder.info.splits["unlabeled"].num_examples == 2
    examples = _examples(builder)["unlabeled"]
    assert sorted(examples) == sorted(shapes)
    for name, shape in shapes.items():
        mask = examples[name]["segmentation_mask"]
        assert mask.shape == (*shape, 1) and (mask == 255).all()
        assert examples[name]["image"].shape == (*shape, 3)
    assert set(next(iter(examples.values()))) == {"image", "segmentation_mask", "image/filename"}


def test_a_changed_folder_is_built_anew_not_read_from_cache(tmp_path):
    root = tmp_path / "data"
    _index_folder(root)
    config = _config(root, tmp_path / "tfds", class_names="a,b,c", void_label=0)
    first = _build(config)
    time.sleep(0.01)
    _write_pair(root, "s0", np.zeros((*SIZE, 3), np.uint8), np.full(SIZE, 3, np.uint8))
    second = _build(config)
    assert second.builder_config.name != first.builder_config.name
    s0 = {**_examples(second)["train"], **_examples(second)["validation"]}["s0.png"]
    assert (s0["segmentation_mask"] == 2).all()
    config.folder.void_label = 3  # Settings name the dataset too.
    assert dataset_info.builder(config).builder_config.name != second.builder_config.name


def _refused(config, *fragments):
    """Builds `config`, expecting a FolderError containing `fragments`, quickly, and no data."""
    start = time.perf_counter()
    with pytest.raises(FolderError) as error:
        _build(config)
    assert time.perf_counter() - start < 10
    for fragment in fragments:
        assert str(fragment) in str(error.value), str(error.value)
    leftovers = os.listdir(config.data_dir) if os.path.isdir(config.data_dir) else []
    assert not leftovers, leftovers  # Nothing half-built.
    return str(error.value)


def test_colour_mask_without_colours_is_refused(tmp_path):
    _colour_folder(tmp_path / "data")
    _refused(_config(tmp_path / "data", tmp_path / "tfds", class_names="a,b,c",
                     mask_suffix="_color"),
             "_color.png", "colour (RGB) image", "config.folder.colors")


def test_unknown_colours_are_listed_with_pixel_counts(tmp_path):
    root = tmp_path / "data"
    _colour_folder(root)
    (root / "colors.txt").write_text("10 20 30 sky\n200 0 0 road\n0 0 200 car\n")
    message = _refused(_config(root, tmp_path / "tfds", colors=str(root / "colors.txt"),
                               mask_suffix="_color"), "_color.png", "'void'")
    named = re.match(r"Mask (\S+) has 1 colour", message).group(1)
    white = int((np.asarray(Image.open(named)) == 255).all(axis=-1).sum())
    assert f"map: (255, 255, 255) {white} pixels." in message


def test_mask_of_another_size_is_refused(tmp_path):
    _index_folder(tmp_path / "data")
    _write_pair(tmp_path / "data", "s2", np.zeros((*SIZE, 3), np.uint8),
                np.zeros((SIZE[0], SIZE[1] + 1), np.uint8))
    _refused(_config(tmp_path / "data", tmp_path / "tfds", class_names="a,b,c", void_label=0),
             "s2.png is 12x17", "s2.png is 12x16")


def test_value_neither_class_nor_void_names_file_value_and_count(tmp_path):
    _index_folder(tmp_path / "data", values=(0, 1, 2, 255))
    mask = np.zeros(SIZE, np.uint8)
    mask[:2, :3] = 7
    _write_pair(tmp_path / "data", "s3", np.zeros((*SIZE, 3), np.uint8), mask)
    _refused(_config(tmp_path / "data", tmp_path / "tfds", class_names="a,b,c"),
             "s3.png", "7 (6 pixels)", "values 0..2", "void (255)",
             "config.folder.void_label")


def test_more_classes_in_the_masks_than_names_is_refused(tmp_path):
    _index_folder(tmp_path / "data", values=(0, 1, 2, 3, 4))
    message = _refused(_config(tmp_path / "data", tmp_path / "tfds", class_names="a,b,c",
                               void_label=0), "values 1..3", "4 (")
    assert "config.folder.class_names lacks names" in message


@pytest.mark.parametrize("which", ["image", "mask"])
def test_truncated_files_are_refused(tmp_path, which):
    _index_folder(tmp_path / "data")
    path = tmp_path / "data" / ("images" if which == "image" else "masks") / "s1.png"
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    _refused(_config(tmp_path / "data", tmp_path / "tfds", class_names="a,b,c", void_label=0),
             "s1.png", "truncated")


def test_truncated_jpeg_is_refused(tmp_path):
    root = tmp_path / "data"
    _colour_folder(root)
    path = root / "images" / "c1.jpg"
    path.write_bytes(path.read_bytes()[:-200])
    _refused(_config(root, tmp_path / "tfds", colors=str(root / "colors.txt"),
                     mask_suffix="_color"), "c1.jpg", "truncated")


def test_missing_class_names_and_empty_directory_are_refused(tmp_path):
    _index_folder(tmp_path / "data")
    _refused(_config(tmp_path / "data", tmp_path / "tfds"), "config.folder.class_names")
    (tmp_path / "empty").mkdir()
    _refused(_config(tmp_path / "data", tmp_path / "tfds", class_names="a,b,c",
                     train_images=str(tmp_path / "empty")), "empty", "has no files")


def test_the_builder_refuses_to_be_made_by_name():
    with pytest.raises(FolderError, match="configured by config.folder"):
        segmentation_folder.SegmentationFolder()
