"""The Grain pipeline's guarantees on an in-memory source of decoded records: order, topology
and worker invariance, exact resume, augmentation seeds, unlabeled stream, eval coverage."""

import numpy as np
import pytest

from advseg_jax import grain_pipeline
from advseg_jax.data import augment_np

_SIZES = [(10, 12), (12, 9), (8, 8), (11, 10), (9, 12), (12, 12), (7, 11)]


def _source():
    """Records whose pixels say which record they are (image[0, 0, 0] = record id)."""
    rng = np.random.default_rng(0)
    records = []
    for index, (height, width) in enumerate(_SIZES):
        image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        mask = rng.integers(0, 4, size=(height, width, 1), dtype=np.uint8)
        mask[0, -1] = 255
        image[0, 0, 0] = index
        records.append({"image": image, "segmentation_mask": mask})
    return records


@pytest.fixture
def config():
    from configs import default
    config = default.get_config()
    config.seed = 3
    config.batch_size = 4
    config.eval_batch_size = 4
    config.input.crop_size = (8, 8)
    config.input.min_scale, config.input.max_scale = 0.75, 1.5
    config.input.random_flip = True
    config.input.eval_size = (12, 12)
    return config


def _take(iterator, count):
    return [next(iterator) for _ in range(count)]


def _assert_same(batches_a, batches_b):
    assert len(batches_a) == len(batches_b)
    for a, b in zip(batches_a, batches_b):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_batches_match_an_independent_numpy_computation(config):
    source = _source()
    batches = _take(grain_pipeline.train_iterator(config, source, process_index=0,
                                                  process_count=1), 3)
    for step, batch in enumerate(batches):
        assert batch["image"].shape == (4, 8, 8, 3) and batch["image"].dtype == np.uint8
        assert batch["label"].shape == (4, 8, 8) and batch["label"].dtype == np.int32
        for row in range(4):
            position = step * 4 + row
            order = np.random.default_rng([config.seed, position // 7]).permutation(7)
            record = source[order[position % 7]]
            image, mask = augment_np.train_augment(
                    record["image"], record["segmentation_mask"],
                    np.random.default_rng([config.seed, position]), crop_size=(8, 8),
                    min_scale=0.75, max_scale=1.5, random_flip=True, ignore_label=255,
                    fill_rgb=config.input.fill_rgb)
            np.testing.assert_array_equal(batch["image"][row], image)
            np.testing.assert_array_equal(batch["label"][row], mask[..., 0])


def test_every_epoch_reads_every_record_once(config):
    config.input.min_scale = config.input.max_scale = 1.0
    config.input.crop_size, config.input.random_flip = (12, 12), False
    config.batch_size = 7
    batches = _take(grain_pipeline.train_iterator(config, _source(), process_index=0,
                                                  process_count=1), 3)
    epochs = [sorted(batch["image"][:, 0, 0, 0].tolist()) for batch in batches]
    assert epochs == [list(range(7))] * 3
    assert [b["image"][:, 0, 0, 0].tolist() for b in batches[:2]][0] != \
        [b["image"][:, 0, 0, 0].tolist() for b in batches[:2]][1]  # Reshuffled per epoch.


def test_two_processes_interleave_into_the_one_process_batches(config):
    source = _source()
    whole = _take(grain_pipeline.train_iterator(config, source, process_index=0,
                                                process_count=1), 4)
    shares = [_take(grain_pipeline.train_iterator(config, source, process_index=i,
                                                  process_count=2), 4) for i in range(2)]
    for step in range(4):
        for key in ("image", "label"):
            merged = np.empty_like(whole[step][key])
            merged[0::2], merged[1::2] = shares[0][step][key], shares[1][step][key]
            np.testing.assert_array_equal(merged, whole[step][key])


def test_resume_at_step_k_equals_the_uninterrupted_stream(config):
    source = _source()
    uninterrupted = _take(grain_pipeline.train_iterator(config, source, process_index=0,
                                                        process_count=1), 6)
    resumed = _take(grain_pipeline.train_iterator(config, source, start_step=4,
                                                  process_index=0, process_count=1), 2)
    _assert_same(resumed, uninterrupted[4:])


def test_two_worker_processes_give_the_same_batches(config):
    source = _source()
    in_process = _take(grain_pipeline.train_iterator(config, source, start_step=1,
                                                     process_index=0, process_count=1), 4)
    config.input.num_workers = 2
    workers = _take(grain_pipeline.train_iterator(config, source, start_step=1,
                                                  process_index=0, process_count=1), 4)
    _assert_same(workers, in_process)
    evaluated = list(grain_pipeline.eval_iterator(config, source, process_index=0,
                                                  process_count=1))
    config.input.num_workers = 0
    _assert_same(evaluated, list(grain_pipeline.eval_iterator(config, source, process_index=0,
                                                              process_count=1)))


def test_unlabeled_stream_has_its_own_order_and_keeps_void_apart(config):
    config.input.min_scale = config.input.max_scale = 1.0
    config.input.crop_size = (13, 13)  # Larger than every record: padding in every crop.
    config.unlabeled_batch_size = 0
    source = _source()
    labeled = _take(grain_pipeline.train_iterator(config, source, process_index=0,
                                                  process_count=1), 2)
    unlabeled = _take(grain_pipeline.unlabeled_iterator(config, source, process_index=0,
                                                        process_count=1), 2)
    assert [b["image"][:, 0, 0, 0].tolist() for b in labeled] != \
        [b["unlabeled_image"][:, 0, 0, 0].tolist() for b in unlabeled]
    shuffle = grain_pipeline.stream_seed(config.seed, "unlabeled")
    order = np.random.default_rng([shuffle, 0]).permutation(7)
    for row in range(4):
        position = row
        record = source[order[position]]
        rng = np.random.default_rng([config.seed, position + 2 ** 40])
        draw = augment_np.draw_crop(rng, record["image"].shape[:2], (13, 13), 1.0, 1.0)
        height, width = record["image"].shape[:2]
        valid = unlabeled[0]["unlabeled_valid"][row]
        label = unlabeled[0]["unlabeled_label"][row]
        if draw.flip:
            valid, label = valid[:, ::-1], label[:, ::-1]
        # The record's own void (255 at its top-right) is valid; only padding is not.
        assert valid[:height, :width].all() and not valid[height:].any()
        assert not valid[:, width:].any()
        np.testing.assert_array_equal(label[:height, :width],
                                      record["segmentation_mask"][..., 0])


@pytest.mark.parametrize("process_count,num_examples", [(1, None), (2, None), (2, 5)])
def test_eval_covers_every_pixel_once(config, process_count, num_examples):
    source = _source()
    total = num_examples or len(source)
    seen = np.zeros(len(source), int)
    counts = []
    for process in range(process_count):
        batches = list(grain_pipeline.eval_iterator(
                config, source, num_examples, process_index=process,
                process_count=process_count))
        counts.append(len(batches))
        for batch in batches:
            assert batch["image"].shape == (4 // process_count, 12, 12, 3)
            for image, label, pixel_mask in zip(batch["image"], batch["label"],
                                                batch["pixel_mask"]):
                if not pixel_mask.any():
                    assert (label == 255).all()
                    continue
                record = int(image[0, 0, 0])
                seen[record] += 1
                height, width = _SIZES[record]
                assert pixel_mask.sum() == height * width and pixel_mask[:height, :width].all()
                np.testing.assert_array_equal(label[:height, :width],
                                              source[record]["segmentation_mask"][..., 0])
    assert seen.tolist() == [1] * total + [0] * (len(source) - total)
    assert len(set(counts)) == 1
    assert counts[0] == grain_pipeline.num_eval_batches(config, len(source), num_examples,
                                                        process_count=process_count)


def test_refuses_a_tfrecord_dataset_saying_how_to_rebuild():
    class _Info:
        file_format = "tfrecord"
        full_name = "digit_scenes/1.0.0"

    class _Builder:
        info, data_dir = _Info(), "/data/digit_scenes/1.0.0"

    with pytest.raises(ValueError, match="Rebuild it: delete /data/digit_scenes/1.0.0"):
        grain_pipeline.data_source(_Builder(), "train")


def test_unlabeled_resume_and_two_processes_match_the_uninterrupted_stream(config):
    config.unlabeled_batch_size = 2
    source = _source()
    whole = _take(grain_pipeline.unlabeled_iterator(config, source, process_index=0,
                                                    process_count=1), 5)
    resumed = _take(grain_pipeline.unlabeled_iterator(config, source, start_step=3,
                                                      process_index=0, process_count=1), 2)
    _assert_same(resumed, whole[3:])
    second = _take(grain_pipeline.unlabeled_iterator(config, source, process_index=1,
                                                     process_count=2), 5)
    for step in range(5):
        for key, value in second[step].items():
            np.testing.assert_array_equal(value[0], whole[step][key][1])
