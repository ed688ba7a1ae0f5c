"""Programs run where `import tensorflow` fails, as on JAX accelerator images.

Each check runs in a subprocess with tests/without_tensorflow/ on PYTHONPATH. Every module a
run imports is TensorFlow-free: TF_FREE are imported together, CLIS one process each.
"""

import ast
import json
import sys
import types

import pytest

import without_tensorflow_runs
from advseg_jax import cli

TF_FREE = ["advseg_jax.metric_writer", "advseg_jax.progress", "advseg_jax.summary",
           "advseg_jax.data", "experiments.ablations", "experiments.results"]
# The CLIs, one process each (they define the same absl flags).
CLIS = ["advseg_jax.main", "advseg_jax.train", "advseg_jax.evaluate", "advseg_jax.predict",
        "advseg_jax.benchmark", "advseg_jax.prepare_data", "advseg_jax.dataset_summary",
        "advseg_jax.input_pipeline", "advseg_jax.config_checks"]
# Modules that must never name TensorFlow or clu themselves (whatever they import).
NO_DIRECT_IMPORT = ["metric_writer", "progress", "main", "train", "evaluate", "predict",
                    "benchmark", "summary", "cli"]

_IMPORT_EACH = """
import importlib, json, sys
failures = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as error:
        failures[name] = f"{type(error).__name__}: {error}"
print(json.dumps({"failures": failures, "tensorflow_loaded": "tensorflow" in sys.modules}))
"""


def _import_each(names):
    result = without_tensorflow_runs.run_python(["-c", _IMPORT_EACH, *names])
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_tensorflow_is_blocked_in_the_subprocess():
    result = without_tensorflow_runs.run_python(["-c", "import tensorflow.compat.v1"])
    assert result.returncode != 0
    assert "ModuleNotFoundError: No module named 'tensorflow'" in result.stderr


def test_tf_free_modules_import_without_tensorflow():
    outcome = _import_each(TF_FREE)
    assert outcome == {"failures": {}, "tensorflow_loaded": False}


@pytest.mark.parametrize("name", CLIS)
def test_cli_modules_import_without_tensorflow(name):
    assert _import_each([name]) == {"failures": {}, "tensorflow_loaded": False}


@pytest.mark.parametrize("module", NO_DIRECT_IMPORT)
def test_module_imports_neither_tensorflow_nor_clu_itself(module):
    """Their own share of the work is done even while a dependency still imports TF."""
    path = without_tensorflow_runs.REPO / "advseg_jax" / f"{module}.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"tensorflow", "clu"}, path


def test_accelerators_are_hidden_from_an_imported_tensorflow(monkeypatch):
    calls = []
    config = types.SimpleNamespace(set_visible_devices=lambda *args: calls.append(args))
    monkeypatch.setitem(sys.modules, "tensorflow", types.SimpleNamespace(config=config))
    cli.hide_accelerators_from_tensorflow()
    assert calls == [([], "GPU")]


def test_hiding_accelerators_never_imports_tensorflow(monkeypatch):
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    cli.hide_accelerators_from_tensorflow()
    assert "tensorflow" not in sys.modules


_WRITE_AND_READ = """
import json, sys
import numpy as np
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util
from advseg_jax import metric_writer, progress

writer = metric_writer.create_default_writer(sys.argv[1])
report = progress.ReportProgress(num_train_steps=4, writer=writer, every_steps=2)
for step in range(1, 5):
    report(step)
writer.write_scalars(4, {"eval/mean_iou": 0.375})
writer.write_images(4, {"eval/image_truth_prediction": np.full((1, 2, 3, 3), 7, np.uint8)})
writer.write_hparams({"batch_size": 4})
writer.close()
events = event_accumulator.EventAccumulator(sys.argv[1], size_guidance={"tensors": 0})
events.Reload()
tensors = {tag: [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)]
           for tag in events.Tags()["tensors"]}
print(json.dumps({
    "tags": sorted(tensors),
    "mean_iou": [(s, float(v)) for s, v in tensors["eval/mean_iou"]],
    "steps_per_sec_steps": [s for s, _ in tensors["steps_per_sec"]],
    "image_header": [v[:2].astype(str).tolist() for _, v in
                     tensors["eval/image_truth_prediction"]],
    "tensorflow_loaded": "tensorflow" in sys.modules}))
"""


def test_writer_writes_and_reads_back_events_without_tensorflow(tmp_path):
    result = without_tensorflow_runs.run_python(["-c", _WRITE_AND_READ, str(tmp_path)])
    assert result.returncode == 0, result.stderr[-3000:]
    read = json.loads(result.stdout.strip().splitlines()[-1])
    assert read == {
        "tags": ["_hparams_/session_start_info", "eval/image_truth_prediction",
                 "eval/mean_iou", "steps_per_sec", "uptime"],
        "mean_iou": [[4, 0.375]],
        "steps_per_sec_steps": [2, 4],
        "image_header": [["3", "2"]],
        "tensorflow_loaded": False}
    assert len(list(tmp_path.glob("events.out.tfevents*"))) == 1


_BUILD_STANFORD = """
import json, sys
from advseg_jax import input_pipeline
from advseg_jax.configs import stanford_background
config = stanford_background.get_config()
config.data_dir, config.manual_dir = sys.argv[1], sys.argv[2]
config.input.crop_size = (32, 48)
builder = input_pipeline.get_builder(config)
batch = next(input_pipeline.train_iterator(config, builder))
print(json.dumps({"splits": {k: v.num_examples for k, v in builder.info.splits.items()},
                  "format": str(builder.info.file_format.value),
                  "label_shape": list(batch["label"].shape),
                  "tensorflow_loaded": "tensorflow" in sys.modules}))
"""


def test_stanford_builds_from_its_archive_and_trains_without_tensorflow(tmp_path):
    """The archive is unpacked by Python's tarfile (TFDS's extractor needs TensorFlow's gfile)
    and the examples are encoded bytes: a build and a batch with TensorFlow absent."""
    dummy = without_tensorflow_runs.REPO / "advseg_jax" / "data" / "dummy_data" / \
        "stanford_background"
    result = without_tensorflow_runs.run_python(
        ["-c", _BUILD_STANFORD, str(tmp_path / "tfds"), str(dummy)])
    assert result.returncode == 0, result.stderr[-3000:]
    read = json.loads(result.stdout.strip().splitlines()[-1])
    assert read == {"splits": {"train": 8, "test": 2}, "format": "array_record",
                    "label_shape": [16, 32, 48], "tensorflow_loaded": False}
