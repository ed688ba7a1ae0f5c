"""dataset_info: every dataset's classes and palette come from its builder's metadata."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from advseg_jax.configs import default
from advseg_jax.data import class_info
from advseg_jax.data import dataset_facts
from advseg_jax.data import dataset_info


@pytest.mark.parametrize("name, classes, source_void", [
    ("digit_scenes", class_info.DIGIT_SCENES_CLASSES, 255),
    ("voc2012_segmentation", class_info.VOC_CLASSES, 255),
    ("stanford_background/fold3", class_info.STANFORD_BACKGROUND_CLASSES, -1),
])
def test_our_builders_carry_names_palette_and_void_in_metadata(tmp_path, name, classes,
                                                               source_void):
    config = default.get_config()
    config.dataset, config.data_dir = name, str(tmp_path)
    builder = dataset_info.builder(config)  # Not prepared: the metadata is the builder's own.
    assert dataset_info.class_names(builder) == tuple(classes)
    np.testing.assert_array_equal(dataset_info.palette(builder), class_info.voc_palette())
    assert dict(builder.info.metadata.items())["source_void_label"] == source_void
    with pytest.raises(ValueError, match=f"num_classes=3 but dataset .* has {len(classes)}"):
        dataset_info.class_names(builder, 3)


def test_prepared_dataset_reads_its_metadata_back(data_dir):
    builder = tfds.builder("digit_scenes", data_dir=data_dir)
    assert builder.is_prepared()
    assert dataset_info.class_names(builder, 11) == class_info.DIGIT_SCENES_CLASSES


def test_num_classes_zero_means_the_dataset_s_count(tmp_path):
    config = default.get_config()
    config.data_dir, config.num_classes = str(tmp_path), 0
    resolved = dataset_facts.with_num_classes_from_builder(config)
    assert resolved.num_classes == 11 and config.num_classes == 0


def test_a_dataset_without_names_gets_numbered_ones_given_a_count():
    class Bare:
        class info:
            metadata = None
            full_name = "someone_elses/1.0.0"
    assert dataset_info.class_names(Bare(), 3) == ("class_0", "class_1", "class_2")
    with pytest.raises(ValueError, match="records no class names"):
        dataset_info.class_names(Bare())
