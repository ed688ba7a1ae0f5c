"""Builders write array_record without TensorFlow, with the records (order and content) of a
TFRecord build, and the Grain pipeline reads them; a TFRecord build is refused with the fix."""

import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from advseg_jax import grain_pipeline
from advseg_jax.configs import folder as folder_config
from advseg_jax.data import builder_io
from advseg_jax.data import dataset_info

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SIZE = (10, 14)

# Runs with tensorflow invisible to every import finder: as in a Python without it installed.
_WITHOUT_TF = textwrap.dedent("""
    import sys

    class _WithoutTF:
        def __init__(self, finder):
            self._finder = finder

        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                return None
            return self._finder.find_spec(name, path, target)

        def invalidate_caches(self):
            getattr(self._finder, "invalidate_caches", lambda: None)()

    sys.meta_path[:] = [_WithoutTF(finder) for finder in sys.meta_path]
""")

_BUILD_AND_READ = _WITHOUT_TF + textwrap.dedent("""
    import json
    import numpy as np
    from advseg_jax import grain_pipeline
    from advseg_jax.configs import folder as folder_config

    config = folder_config.get_config()
    config.update_from_flattened_dict(json.loads(sys.argv[1]))
    builder = grain_pipeline.get_builder(config)
    source = grain_pipeline.data_source(builder, "validation")
    config.eval_batch_size, config.input.eval_size = 2, (10, 14)
    config.input.image_scale = 1.0
    batches = list(grain_pipeline.eval_iterator(config, source, process_index=0,
                                                process_count=1))
    cached = grain_pipeline.data_source(builder, "validation", cache_decoded=True)
    cached_batches = list(grain_pipeline.eval_iterator(config, cached, process_index=0,
                                                       process_count=1))
    np.savez(sys.argv[2], ids=grain_pipeline.example_ids(builder, "validation"),
             labels=np.concatenate([b["label"] for b in batches]),
             cached_labels=np.concatenate([b["label"] for b in cached_batches]),
             cached_type=type(cached).__name__,
             file_format=str(builder.info.file_format.value),
             tensorflow=[m for m in sys.modules if m.split(".")[0] == "tensorflow"])
""")


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "folder"
    for directory in ("images", "masks"):
        os.makedirs(root / directory)
    masks = {}
    for index in range(6):
        Image.fromarray(rng.integers(0, 256, (*_SIZE, 3), dtype=np.uint8)).save(
                root / "images" / f"s{index}.jpg", quality=95)
        masks[f"s{index}.jpg"] = rng.integers(0, 3, _SIZE).astype(np.uint8)
        Image.fromarray(masks[f"s{index}.jpg"]).save(root / "masks" / f"s{index}.png")
    return root, masks


def _config(root, data_dir):
    config = folder_config.get_config()
    config.data_dir = str(data_dir)
    config.folder.train_images = str(root / "images")
    config.folder.train_masks = str(root / "masks")
    config.folder.eval_fraction = 0.5
    config.folder.class_names = "a,b,c"
    return config


def test_array_record_builds_and_reads_without_tensorflow(folder, tmp_path):
    root, masks = folder
    config = _config(root, tmp_path / "tfds")
    overrides = {"data_dir": config.data_dir, "folder.train_images": config.folder.train_images,
                 "folder.train_masks": config.folder.train_masks, "folder.eval_fraction": 0.5,
                 "folder.class_names": "a,b,c"}
    out = tmp_path / "read.npz"
    subprocess.run([sys.executable, "-c", _BUILD_AND_READ, json.dumps(overrides), str(out)],
                   check=True, cwd=_REPO, timeout=600)
    read = np.load(out)
    assert str(read["file_format"]) == "array_record"
    assert read["tensorflow"].size == 0
    ids = read["ids"].tolist()
    assert str(read["cached_type"]) == "list"  # Decoded once, held in host memory.
    np.testing.assert_array_equal(read["cached_labels"], read["labels"])
    assert len(ids) == 3 and (read["labels"][3] == 255).all()  # 2 batches of 2: one pad row.
    np.testing.assert_array_equal(read["labels"][:3], np.stack([masks[name] for name in ids]))

    # A TFRecord build of the same folder (TensorFlow's reader): same records, same order.
    tf_config = _config(root, tmp_path / "tfds_tfrecord")
    builder = dataset_info.builder(tf_config, file_format="tfrecord")
    builder_io.prepare(builder, tf_config.data_dir)
    from dataset_records import records
    names = [r["image/filename"].decode() for r in records(builder, "validation")]
    assert names == ids
    with pytest.raises(ValueError, match="Rebuild it: delete .*tfds_tfrecord"):
        grain_pipeline.data_source(builder, "validation")
    with pytest.raises(ValueError, match="prepared as 'tfrecord'.*Rebuild it: delete "
                       ".*tfds_tfrecord"):  # What every tool meets: the default builder.
        dataset_info.builder(tf_config)


def test_encode_png_is_lossless():
    rng = np.random.default_rng(1)
    for array in (rng.integers(0, 256, (5, 7, 3), dtype=np.uint8),
                  rng.integers(0, 256, (5, 7, 1), dtype=np.uint8)):
        decoded = np.asarray(Image.open(io.BytesIO(builder_io.encode_png(array))))
        np.testing.assert_array_equal(decoded.reshape(array.shape), array)
    with pytest.raises(ValueError, match="uint8"):
        builder_io.encode_png(np.zeros((2, 2), np.int32))


def test_benchmark_times_the_grain_pipeline_on_an_array_record_dataset(folder, tmp_path):
    from advseg_jax import benchmark
    root, _ = folder
    config = _config(root, tmp_path / "tfds")
    config.batch_size, config.input.crop_size = 2, (8, 8)
    config.input.cache_decoded = True
    grain_pipeline.get_builder(config)
    figures = benchmark.measure_input(config, batches=2)
    assert figures["input_pipeline"] == "grain" and figures["input_reason"] is None
    assert figures["input_images_per_s"] > 0
    assert figures["input_images_per_s_per_core"] == pytest.approx(
            figures["input_images_per_s"] / figures["input_host_cores"])


def test_two_workers_read_the_tfds_source_as_the_training_process_does(folder, tmp_path):
    root, _ = folder
    config = _config(root, tmp_path / "tfds")
    config.batch_size, config.input.crop_size = 2, (8, 8)
    config.input.min_scale, config.input.max_scale = 0.5, 1.5
    source = grain_pipeline.data_source(grain_pipeline.get_builder(config), "train")
    batches = {}
    for workers in (0, 2):
        config.input.num_workers = workers
        iterator = grain_pipeline.train_iterator(config, source, start_step=2, process_index=0,
                                                 process_count=1)
        batches[workers] = [next(iterator) for _ in range(3)]
    for in_process, from_workers in zip(batches[0], batches[2]):
        for key in ("image", "label"):
            np.testing.assert_array_equal(in_process[key], from_workers[key])


def test_largest_image_reads_array_record_headers(tmp_path):
    from advseg_jax import config_checks
    root = tmp_path / "folder"
    for directory in ("images", "masks"):
        os.makedirs(root / directory)
    sizes = [(10, 14), (16, 9), (12, 12)]
    for index, (height, width) in enumerate(sizes):
        Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(
                root / "images" / f"s{index}.jpg")
        Image.fromarray(np.zeros((height, width), np.uint8)).save(
                root / "masks" / f"s{index}.png")
    config = _config(root, tmp_path / "tfds")
    config.folder.eval_fraction = 0.4
    builder = grain_pipeline.get_builder(config)
    assert str(builder.info.file_format.value) == "array_record"
    for split in ("train", "validation"):
        record_sizes = [sizes[int(name[1])] for name in grain_pipeline.example_ids(builder,
                                                                                    split)]
        for count in (None, 1):
            chosen = record_sizes[:count]
            assert config_checks.largest_image(builder, split, count) == (
                    max(h for h, _ in chosen), max(w for _, w in chosen)), (split, count)
