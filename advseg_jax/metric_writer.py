"""TensorBoard scalars, image strips and hparams, written without TensorFlow.

clu's metric writers import TensorFlow, which JAX accelerator images do not ship; this writer
has their interface (what `train.py` calls) and writes the same event protos through the
`tensorboard` package's own event-file writer. Scalars are float32 tensors of the `scalars`
plugin and images PNG strings of the `images` plugin, as `tf.summary.scalar/image` write them,
so TensorBoard, `event_accumulator` and `tf.compat.v1.train.summary_iterator` read them alike.
Every value is also logged (absl INFO), in clu's `LoggingWriter` format; processes other than
0 only log (`just_logging`), so a multi-process run has one events file.
"""

import io
import sys
import time
import types
from typing import Any, Mapping, Optional

import numpy as np
from absl import logging
from PIL import Image

# The `tensorboard` package reaches file I/O through `tensorboard.compat.tf`, which imports
# TensorFlow wherever it is installed (7.5 s and a few hundred MB here, in every training
# process) and falls back to TensorBoard's own stub (local files; fsspec URLs such as gs://
# with gcsfs) elsewhere. The marker module TensorBoard documents for "no TensorFlow" makes it
# take the stub always, so runs behave the same with and without TensorFlow installed.
sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))

# Imported after the marker on purpose, hence the noqa: E402 below.
from tensorboard.compat.proto import event_pb2  # noqa: E402
from tensorboard.compat.proto import summary_pb2  # noqa: E402
from tensorboard.plugins.hparams import summary_v2 as hparams_summary  # noqa: E402
from tensorboard.plugins.image import metadata as image_metadata  # noqa: E402
from tensorboard.plugins.scalar import summary_v2 as scalar_summary  # noqa: E402
from tensorboard.summary.writer import event_file_writer  # noqa: E402
from tensorboard.util import tensor_util  # noqa: E402


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
    return buffer.getvalue()


def image_summary(tag: str, images: np.ndarray) -> summary_pb2.Summary:
    """uint8 [N, H, W, C] (C = 1, 3 or 4; [H, W, C] is one image) → an `images`-plugin summary.

    The tensor is [width, height, png_0, ..., png_{N-1}] as strings, `tf.summary.image`'s layout.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(f"Image summary {tag!r}: expected uint8 [N, H, W, 1|3|4], got "
                         f"{images.dtype} {images.shape}. Convert with "
                         "np.clip(np.round(x * 255), 0, 255).astype(np.uint8) for [0, 1] floats.")
    strings = [str(images.shape[2]).encode(), str(images.shape[1]).encode()]
    strings += [_png(image) for image in images]
    summary = summary_pb2.Summary()
    summary.value.add(tag=tag, metadata=image_metadata.create_summary_metadata(None, None),
                      tensor=tensor_util.make_tensor_proto(np.array(strings, dtype=object)))
    return summary


class MetricWriter:
    """Writes to `<logdir>/events.out.tfevents.*` (nothing on disk if `logdir` is None)."""

    def __init__(self, logdir: Optional[str], *, just_logging: bool = False):
        self._events = (None if just_logging or logdir is None
                        else event_file_writer.EventFileWriter(logdir))

    def _add(self, step: int, summary: summary_pb2.Summary) -> None:
        if self._events is not None:
            self._events.add_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                                   summary=summary))

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """{tag: number}; numpy and 0-d JAX arrays are numbers too."""
        logging.info("[%d] %s", step, ", ".join(
            f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in sorted(scalars.items())))
        summary = summary_pb2.Summary()
        for tag, value in scalars.items():
            summary.value.extend(scalar_summary.scalar_pb(tag, np.asarray(value)).value)
        self._add(step, summary)

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """{tag: uint8 [N, H, W, 3]}: all N images, PNG-encoded."""
        logging.info("[%d] Got images: %s.", step,
                     {k: np.shape(v) for k, v in images.items()})
        if self._events is None:
            return
        for tag, value in images.items():
            self._add(step, image_summary(tag, value))

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        """{name: bool | int | float | str}, shown in TensorBoard's HPARAMS tab."""
        logging.info("[Hyperparameters] %s", dict(hparams))
        self._add(0, hparams_summary.hparams_pb(dict(hparams)))

    def flush(self) -> None:
        """Blocks until every event so far is on disk."""
        if self._events is not None:
            self._events.flush()

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None


def create_default_writer(logdir: Optional[str], *, just_logging: bool = False) -> MetricWriter:
    """clu's `metric_writers.create_default_writer`, without TensorFlow."""
    return MetricWriter(logdir, just_logging=just_logging)
