"""The paper's Pascal VOC adversaries (Luc et al. 2016, Sec. 4.2): LargeFOV, SmallFOV and lights.

All are stride-1 convs + ReLU with two 2x2 max-pools, a final conv to one channel and a global
average: one logit per example whatever the map size. They differ in the field of view of a
final output unit, in label-map pixels: 34x34 (LargeFOV: 3x3 convs throughout) or 18x18
(SmallFOV: every other conv is 1x1), which sets how far apart the label configurations are
that the adversary can relate. With pools of size and stride 2 the field of view is
    1 + sum_l (k_l - 1) * j_l  (+ (2 - 1) * j for each pool),
j_l the input stride of layer l (1, 2 or 4):
    LargeFOV: 1 + 3*2*1 + 1 + 2*2*2 + 2 + 2*4 (512 conv) + 2*4 (output conv) = 34;
    SmallFOV: 1 + 2 + 1 + 4 + 2 + 8 (3x3 512 conv), the 1x1 convs and output add 0 = 18.
So the final 1 x 1/3 x 3 output conv sits after the second pool, at input stride 4.

"Light" versions have fewer channels in the layers after the first pool (Sec. 4.2: lighter
adversaries, fewer channels in the last layers): 128/128/256 in place of 256/256/512; the
first-stage widths (96, 128[, 128]) are kept.

The image: the contract passes `images` too, but the paper's VOC adversaries see only the
encoded label map. With the Product encoding the image is already inside it (3C channels);
with Basic/Scaling the paper reports that adding the image did not help, so by default it is
left out and `adversary.concat_image=True` concatenates the 3 RGB channels to the map.
"""

from typing import Any, Tuple

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from advseg_jax.models import registry

# Per stage (stages separated by 2x2 max-pools): ((kernel, width), ...); then the output conv.
Stages = Tuple[Tuple[Tuple[int, int], ...], ...]
ARCHITECTURES = {
        "largefov": ((((3, 96), (3, 128), (3, 128)), ((3, 256), (3, 256)), ((3, 512),)), 3),
        "largefov_light": ((((3, 96), (3, 128), (3, 128)), ((3, 128), (3, 128)), ((3, 256),)),
                           3),
        "smallfov": ((((3, 96), (1, 128)), ((3, 256), (1, 256)), ((3, 512),)), 1),
        "smallfov_light": ((((3, 96), (1, 128)), ((3, 128), (1, 128)), ((3, 256),)), 1),
}


class FovAdversary(nn.Module):
    """Conv stages with 2x2 max-pools between them, an output conv to 1 channel, global mean."""

    stages: Stages
    output_kernel: int
    concat_image: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def score_map(self, images: jnp.ndarray, label_maps: jnp.ndarray) -> jnp.ndarray:
        """Per-location logits [N, h/4, w/4, 1] before the global average (float32)."""
        x = label_maps
        if self.concat_image:
            x = jnp.concatenate([x, images.astype(x.dtype)], axis=-1)
        x = x.astype(self.dtype)
        for s, stage in enumerate(self.stages, start=1):
            if s > 1:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            for i, (kernel, width) in enumerate(stage, start=1):
                x = nn.relu(nn.Conv(width, (kernel, kernel), padding="SAME", dtype=self.dtype,
                                    name=f"conv{s}_{i}")(x))
        x = nn.Conv(1, (self.output_kernel, self.output_kernel), padding="SAME",
                    dtype=self.dtype, name="output")(x)
        return x.astype(jnp.float32)

    def __call__(self, images: jnp.ndarray, label_maps: jnp.ndarray,
                 train: bool = False) -> jnp.ndarray:
        del train  # No dropout or batch norm.
        return jnp.mean(self.score_map(images, label_maps), axis=(1, 2, 3))


def _factory(name: str):
    stages, output_kernel = ARCHITECTURES[name]

    def build(config: ml_collections.ConfigDict) -> nn.Module:
        return FovAdversary(stages=stages, output_kernel=output_kernel,
                            concat_image=config.adversary.concat_image,
                            dtype=jnp.dtype(config.dtype))

    return build


for _name in ARCHITECTURES:
    registry.register_adversary(_name)(_factory(_name))


def field_of_view(stages: Stages, output_kernel: int) -> int:
    """Receptive field of one output unit in input pixels (pools of size 2, stride 2)."""
    fov, jump = 1, 1
    for s, stage in enumerate(stages, start=1):
        if s > 1:
            fov, jump = fov + jump, 2 * jump
        for kernel, _ in stage:
            fov += (kernel - 1) * jump
    return fov + (output_kernel - 1) * jump

