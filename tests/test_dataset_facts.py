"""dataset_facts: one read of the dataset serves a run's config resolution and checks."""

import copy

import numpy as np
import pytest

from advseg_jax import config_checks
from advseg_jax import input_pipeline
from advseg_jax import train
from advseg_jax.data import class_info
from advseg_jax.data import dataset_facts
from advseg_jax.data import dataset_info


@pytest.fixture
def counted_largest_image(monkeypatch):
    """The (split, count) of every computation of a largest image."""
    calls = []
    compute = dataset_facts.largest_image

    def counting(builder, split, num_examples=None):
        calls.append((split, num_examples))
        return compute(builder, split, num_examples)

    monkeypatch.setattr(dataset_facts, "largest_image", counting)
    return calls


def _auto(config):
    """`config` with both keys left to the dataset."""
    config.num_classes, config.input.eval_size = 0, config_checks.AUTO_EVAL_SIZE
    return config


def test_facts_are_what_the_builder_says(tiny_config):
    builder = input_pipeline.get_builder(tiny_config)
    facts = dataset_facts.load(tiny_config)
    assert facts.class_names == dataset_info.class_names(builder) == \
        class_info.DIGIT_SCENES_CLASSES
    assert facts.num_classes == 11 and facts.void_label == class_info.IGNORE_LABEL == 255
    assert facts.full_name == builder.info.full_name and facts.name == "digit_scenes"
    np.testing.assert_array_equal(facts.palette, dataset_info.palette(builder))
    assert facts.palette.shape == (256, 3) and facts.palette.dtype == np.uint8
    assert dict(facts.split_sizes) == {name: split.num_examples
                                       for name, split in builder.info.splits.items()}
    for split in ("train", "train[72:]", "train[:10%]", "validation[40:60]"):
        assert facts.num_examples(split) == builder.info.splits[split].num_examples
    with pytest.raises(ValueError, match="Unknown split 'unlabelled'"):  # TFDS's message.
        facts.num_examples("unlabelled")


def test_an_unprepared_builder_gives_classes_and_palette_but_no_splits(tmp_path, tiny_config):
    tiny_config.data_dir = str(tmp_path)
    facts = dataset_facts.load(tiny_config, dataset_info.builder(tiny_config))
    assert facts.class_names == class_info.DIGIT_SCENES_CLASSES
    assert dict(facts.split_sizes) == {}
    assert list(tmp_path.iterdir()) == []  # Nothing was prepared.


def test_resolution_and_checks_compute_each_largest_image_once(tiny_config,
                                                               counted_largest_image):
    config, facts = config_checks.resolve(_auto(tiny_config))
    # with_eval_size and check_dataset both needed both evaluated splits' largest images.
    assert sorted(counted_largest_image, key=str) == [("train", 16), ("validation", None)]
    config_checks.check_dataset(config, facts)  # Again: the cache answers.
    assert len(counted_largest_image) == 2


def test_resolved_config_equals_the_old_chain(tiny_config):
    old = dataset_facts.with_num_classes_from_builder(_auto(copy.deepcopy(tiny_config)))
    builder = input_pipeline.get_builder(old)
    old = config_checks.with_eval_size(old, builder)
    config_checks.check_dataset(old, builder)
    resolved, _ = config_checks.resolve(_auto(tiny_config))
    assert resolved.to_dict() == old.to_dict()
    assert resolved.num_classes == 11 and tuple(resolved.input.eval_size) == (48, 48)
    assert tiny_config.num_classes == 0  # The caller's config is left as it was.


def test_a_class_count_the_dataset_lacks_is_refused_with_the_facts(tiny_config):
    tiny_config.num_classes = 3
    with pytest.raises(config_checks.ConfigError,
                       match=r"num_classes=3 but dataset 'digit_scenes' has 11 classes.*255 = "):
        config_checks.resolve(tiny_config)


def test_a_run_reads_its_dataset_once(tiny_config, tmp_path, monkeypatch, counted_largest_image):
    loads, builders = [], []
    load, get_builder = dataset_facts.load, input_pipeline.get_builder
    monkeypatch.setattr(dataset_facts, "load",
                        lambda *args, **kwargs: loads.append(args) or load(*args, **kwargs))
    monkeypatch.setattr(input_pipeline, "get_builder",
                        lambda config: builders.append(config) or get_builder(config))
    tiny_config.num_train_steps = tiny_config.eval_every_steps = 2
    record = train.train_and_evaluate(_auto(tiny_config), str(tmp_path))
    assert len(loads) == 1 and len(builders) == 1
    assert len(counted_largest_image) == 2  # Validation, and the train-eval examples.
    assert record["class_names"] == list(class_info.DIGIT_SCENES_CLASSES)


def test_a_config_mistake_is_refused_before_the_dataset_is_built(tiny_config, tmp_path):
    """With num_classes given, the config alone is checked first: a typo costs no build."""
    tiny_config.data_dir = str(tmp_path / "empty")
    tiny_config.segmentor.name = "no_such_net"
    with pytest.raises(config_checks.ConfigError, match="segmentor.name='no_such_net'"):
        config_checks.resolve(tiny_config)
    assert not (tmp_path / "empty").exists()
