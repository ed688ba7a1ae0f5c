"""Segmentors and adversaries, chosen by name (`config.segmentor.name`, `config.adversary.name`).

Importing this package registers every model.
"""

from advseg_jax.models import adversaries  # noqa: F401  (registers)
from advseg_jax.models import dilated  # noqa: F401  (registers)
from advseg_jax.models import fcn_discriminator  # noqa: F401  (registers)
from advseg_jax.models import fov_adversaries  # noqa: F401  (registers)
from advseg_jax.models import multiscale  # noqa: F401  (registers)
from advseg_jax.models import segmentors  # noqa: F401  (registers)
from advseg_jax.models.registry import adversary_names
from advseg_jax.models.registry import build_adversary
from advseg_jax.models.registry import build_segmentor
from advseg_jax.models.registry import load_pretrained
from advseg_jax.models.registry import segmentor_names

__all__ = ["adversary_names", "build_adversary", "build_segmentor", "load_pretrained",
           "segmentor_names"]
