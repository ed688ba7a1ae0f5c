"""Train stream: resumable and process-count independent; eval: every pixel exactly once."""

import itertools
from unittest import mock

import jax
import numpy as np
import tensorflow_datasets as tfds

from advseg_jax import input_pipeline
from dataset_records import records


def _take(iterator, count):
    return list(itertools.islice(iterator, count))


def _builder(config):
    return tfds.builder(config.dataset, data_dir=config.data_dir)


def test_resuming_at_step_k_gives_the_same_batches(tiny_config):
    builder = _builder(tiny_config)
    fresh = _take(input_pipeline.train_iterator(tiny_config, builder, 0), 5)
    resumed = _take(input_pipeline.train_iterator(tiny_config, builder, 3), 2)
    for a, b in zip(fresh[3:], resumed):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])


def test_two_processes_together_read_the_one_process_global_batch(tiny_config):
    builder = _builder(tiny_config)
    single = _take(input_pipeline.train_iterator(tiny_config, builder, 0), 2)
    parts = []
    for process in range(2):
        with mock.patch.object(jax, "process_count", return_value=2), \
             mock.patch.object(jax, "process_index", return_value=process):
            parts.append(_take(input_pipeline.train_iterator(tiny_config, builder, 0), 2))
    for step in range(2):
        local = [p[step]["image"] for p in parts]
        assert all(len(x) == tiny_config.batch_size // 2 for x in local)
        merged = sorted(x.tobytes() for x in np.concatenate(local))
        assert merged == sorted(x.tobytes() for x in single[step]["image"])


def test_labels_are_int32_with_void(tiny_config):
    batch = next(input_pipeline.train_iterator(tiny_config, _builder(tiny_config)))
    assert batch["label"].dtype == np.int32 and batch["image"].dtype == np.uint8
    assert batch["image"].shape == (tiny_config.batch_size, 48, 48, 3)
    assert 255 in batch["label"]


def test_eval_covers_every_pixel_of_every_image_once_across_processes(tiny_config):
    tiny_config.eval_batch_size = 12  # 500 validation images: a short last batch.
    tiny_config.input.eval_size = (50, 52)  # Padding beyond the 48x48 images.
    builder = _builder(tiny_config)
    reference = list(records(builder, "validation"))
    seen, batch_counts = [], []
    for process in range(2):
        with mock.patch.object(jax, "process_count", return_value=2), \
             mock.patch.object(jax, "process_index", return_value=process):
            batches = list(input_pipeline.eval_iterator(tiny_config, builder, "validation"))
        batch_counts.append(len(batches))
        for batch in batches:
            assert batch["image"].shape == (6, 50, 52, 3)
            for image, label, pixel_mask in zip(batch["image"], batch["label"],
                                                batch["pixel_mask"]):
                if pixel_mask.any():
                    assert pixel_mask[:48, :48].all() and not pixel_mask[48:].any()
                    assert (label[~pixel_mask] == 255).all()
                    seen.append((image[:48, :48].tobytes(), label[:48, :48].tobytes()))
    assert batch_counts[0] == batch_counts[1]  # Equal collective steps on every process.
    expected = sorted((e["image"].tobytes(),
                       e["segmentation_mask"][..., 0].astype(np.int32).tobytes())
                      for e in reference)
    assert sorted(seen) == expected
