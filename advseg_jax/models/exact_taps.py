"""Convolutions as one matmul per kernel tap: skips padding-only taps, and is fast on XLA:CPU.

Dilated-8's fc6 is a 7x7 convolution dilated by 4, from 512 to 4096 channels. On the 40x40
map of a 320x320 crop, 31 % of its tap-pixel products read the SAME padding; on the 8x8 map
of a 64x64 crop, 92 %. XLA's cost model counts only the products that meet the image, but
XLA:CPU's convolution computes them all. Written as one matmul per tap over the output
rectangle that the tap actually reaches, summed, the convolution does only the counted work.
Measured on the 2-core machine (docs/performance.md), fc6's forward and backward passes
took 5.8 s instead of 9.2 s at 40x40 and 0.22 s instead of 1.34 s at 8x8; on conv5 (3x3,
dilation 2, 3 % padding) the same rewrite was 5 % slower, hence the automatic rule below.

A 1x1 convolution is one tap: a plain matmul. XLA:CPU runs its weight gradient as a
convolution, and slowly: Dilated-8's fc7 (4096 to 4096 channels, 40x40) took 4.0 s forward and
backward as a convolution and 0.91 s as a matmul, its weight gradient alone 3.3 s of a 12.4 s
training step in a profile.

`conv_general_dilated(setting)` returns a drop-in for `lax.conv_general_dilated` that flax's
`nn.Conv(conv_general_dilated=...)` calls, so parameters, their names and their
initialisation are those of a plain `nn.Conv`.
"""

from typing import Callable, Optional, Sequence, Tuple, Union

import jax
from jax import lax
import jax.numpy as jnp

from advseg_jax import ordering
from advseg_jax import platforms

SETTINGS = ("auto", "lax", "taps")
# "auto" uses taps on CPU for 1x1 kernels and when at least this fraction of the tap-pixel
# products read padding: fc6 at 40x40 (31 %) ran 1.58x faster, conv5 at 40x40 (3 %) 5 % slower.
AUTO_MIN_PADDING_FRACTION = 0.25

Padding = Union[str, Sequence[Tuple[int, int]]]
NHWC_HWIO = ("NHWC", "HWIO", "NHWC")


def _explicit_padding(padding: Padding, spatial: Sequence[int], kernel: Sequence[int],
                      dilation: Sequence[int]) -> Tuple[Tuple[int, int], ...]:
    if isinstance(padding, str):
        dilated = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
        return tuple(lax.padtype_to_pads(spatial, dilated, (1,) * len(spatial), padding))
    return tuple((int(lo), int(hi)) for lo, hi in padding)


def _output_size(size: int, pad: Tuple[int, int], kernel: int, dilation: int) -> int:
    return size + pad[0] + pad[1] - (kernel - 1) * dilation  # Stride 1.


def _tap_ranges(size: int, pad: Tuple[int, int], kernel: int,
                dilation: int) -> Sequence[Optional[Tuple[int, int, int]]]:
    """Per tap: (first output, end output, input offset) of the outputs it meets the input at."""
    out_size = _output_size(size, pad, kernel, dilation)
    ranges = []
    for tap in range(kernel):
        offset = tap * dilation - pad[0]  # Output i reads input i + offset.
        start, end = max(0, -offset), min(out_size, size - offset)
        ranges.append((start, end, offset) if end > start else None)
    return ranges


def padding_fraction(spatial: Sequence[int], kernel: Sequence[int], dilation: Sequence[int],
                     padding: Padding) -> float:
    """Fraction of a stride-1 convolution's tap-output products that read padding only."""
    pads = _explicit_padding(padding, spatial, kernel, dilation)
    valid = total = 1
    for size, pad, k, d in zip(spatial, pads, kernel, dilation):
        ranges = _tap_ranges(size, pad, k, d)
        valid *= sum(r[1] - r[0] for r in ranges if r is not None)
        total *= k * _output_size(size, pad, k, d)
    return 1.0 - valid / total if total else 0.0


def _tap_plan(lhs_shape, rhs_shape, padding: Padding, rhs_dilation: Sequence[int]):
    """(output height, width, [(tap index, (y0, y1, dy), (x0, x1, dx))]) of the taps that meet
    the input: tap t fills outputs [y0:y1, x0:x1] from input [y0+dy:y1+dy, x0+dx:x1+dx]."""
    _, height, width, _ = lhs_shape
    kh, kw = rhs_shape[:2]
    (pad_h, pad_w) = _explicit_padding(padding, (height, width), (kh, kw), rhs_dilation)
    rows = _tap_ranges(height, pad_h, kh, rhs_dilation[0])
    cols = _tap_ranges(width, pad_w, kw, rhs_dilation[1])
    taps = [(ty * kw + tx, row, col) for ty, row in enumerate(rows) for tx, col in enumerate(cols)
            if row is not None and col is not None]
    return (_output_size(height, pad_h, kh, rhs_dilation[0]),
            _output_size(width, pad_w, kw, rhs_dilation[1]), taps)


def _add_into(total: jax.Array, part: jax.Array, y0: int, x0: int) -> jax.Array:
    """total[:, y0:, x0:] += part, in place: padding each part to total's shape and summing
    would keep one total-sized buffer per tap alive (fc6 at 40x40: 49 x 26 MB per image)."""
    if part.shape == total.shape:
        return total + part
    start = (0, y0, x0, 0)
    return lax.dynamic_update_slice(total, lax.dynamic_slice(total, start, part.shape) + part,
                                    start)


def _window(x: jax.Array, y: int, x_: int, height: int, width: int, zero) -> jax.Array:
    """x[:, y:y+height, x_:x_+width, :], read at `zero`'s offset (`ordering.zero_after`)."""
    if zero is None:
        return x[:, y:y + height, x_:x_ + width, :]
    return lax.dynamic_slice(x, (0, y + zero, x_, 0), (x.shape[0], height, width, x.shape[3]))


def _kernel(taps: jax.Array, tap: int, zero) -> jax.Array:
    """taps[tap] ([in, out]), read at `zero`'s offset like `_window`."""
    if zero is None:
        return taps[tap]
    return lax.dynamic_index_in_dim(taps, tap + zero, keepdims=False)


def _matmul(a: jax.Array, b: jax.Array, contract: Tuple[int, int], precision, dtype):
    return lax.dot_general(a, b, (((contract[0],), (contract[1],)), ((), ())),
                           precision=precision, preferred_element_type=dtype)


def conv_by_taps(lhs: jax.Array, rhs: jax.Array, padding: Padding,
                 rhs_dilation: Sequence[int], precision=None) -> jax.Array:
    """Stride-1 NHWC x HWIO convolution as one matmul per tap over the outputs it reaches.

    The taps run one after the other (`ordering.zero_after`: XLA:CPU would otherwise compute
    every tap's product first, 0.9 GB for fc6 on one 320x320 crop), each added in place into
    one output-sized buffer. The gradient is written by hand (`jax.custom_vjp`) the same way:
    per tap, the kernel gradient is one matmul of the window with the output cotangent's
    rectangle, written into its slot, and the input gradient is added in place. Autodiff of
    the forward sum kept every tap's cotangent rectangle alive at once. For fc6 (one 320x320
    crop, forward and backward) XLA's temporary memory fell from 2.28 to 0.64 GB and the time
    from 6.26 to 2.69 s (bench/taps_side_by_side.py; bench/results/2026-12-02b_issue20/).
    """
    rhs_dilation = tuple(rhs_dilation)
    dtype = jnp.result_type(lhs.dtype, rhs.dtype)
    out_h, out_w, plan = _tap_plan(lhs.shape, rhs.shape, padding, rhs_dilation)
    kh, kw, features_in, features = rhs.shape

    def forward(lhs, rhs):
        taps = rhs.reshape(kh * kw, features_in, features)
        total = jnp.zeros((lhs.shape[0], out_h, out_w, features), dtype)
        zero = None
        for tap, (y0, y1, dy), (x0, x1, dx) in plan:
            window = _window(lhs, y0 + dy, x0 + dx, y1 - y0, x1 - x0, zero)
            kernel = _kernel(taps, tap, zero)
            total = _add_into(total, _matmul(window, kernel, (3, 0), precision, dtype), y0, x0)
            zero = ordering.zero_after(total[0, y0, x0, 0])
        return total

    @jax.custom_vjp
    def conv(lhs, rhs):
        return forward(lhs, rhs)

    def conv_fwd(lhs, rhs):
        return forward(lhs, rhs), (lhs, rhs)

    def conv_bwd(residuals, cotangent):
        lhs, rhs = residuals
        taps = rhs.reshape(kh * kw, features_in, features)
        lhs_grad = jnp.zeros(lhs.shape, dtype)
        rhs_grad = jnp.zeros(taps.shape, dtype)  # Taps that meet only padding stay zero.
        zero = None
        for tap, (y0, y1, dy), (x0, x1, dx) in plan:
            window = _window(lhs, y0 + dy, x0 + dx, y1 - y0, x1 - x0, zero)
            reached = _window(cotangent, y0, x0, y1 - y0, x1 - x0, zero)
            kernel = _kernel(taps, tap, zero)
            # [N, h, w, in] x [N, h, w, out] contracted over N, h, w: the tap's kernel gradient,
            # written in place (a stack of the taps' gradients would be a second copy).
            tap_grad = lax.dot_general(window, reached, (((0, 1, 2), (0, 1, 2)), ((), ())),
                                       precision=precision, preferred_element_type=dtype)
            rhs_grad = lax.dynamic_update_slice(rhs_grad, tap_grad[None], (tap, 0, 0))
            lhs_grad = _add_into(lhs_grad, _matmul(reached, kernel, (3, 1), precision, dtype),
                                 y0 + dy, x0 + dx)
            zero = ordering.zero_after(lhs_grad[0, y0 + dy, x0 + dx, 0])
        return (lhs_grad.astype(lhs.dtype),
                rhs_grad.reshape(rhs.shape).astype(rhs.dtype))

    conv.defvjp(conv_fwd, conv_bwd)
    return conv(lhs, rhs)


def _is_plain_nhwc(lhs, rhs, window_strides, lhs_dilation, dimension_numbers,
                   feature_group_count) -> bool:
    if lhs.ndim != 4 or feature_group_count != 1:
        return False
    if any(s != 1 for s in window_strides) or any(d != 1 for d in (lhs_dilation or (1, 1))):
        return False
    expected = lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC_HWIO)
    return lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == expected


def conv_general_dilated(setting: str, platform: Optional[str] = None) -> Callable[..., jax.Array]:
    """A `lax.conv_general_dilated` that computes by taps where `setting` says so.

    "lax": always lax. "taps": by taps wherever the call is a stride-1 NHWC/HWIO convolution
    (others go to lax). "auto": by taps only on CPU (`platform`, default
    `platforms.current()`: the mesh's devices when traced in a step), for
    1x1 kernels and where at least AUTO_MIN_PADDING_FRACTION of the products read padding.
    """
    if setting not in SETTINGS:
        raise ValueError(f"Unknown convolution setting {setting!r}; valid options: {SETTINGS}.")

    def conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
             dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
        rhs_dilation = tuple(rhs_dilation or (1,) * (lhs.ndim - 2))
        use_taps = setting != "lax" and not kwargs and _is_plain_nhwc(
                lhs, rhs, window_strides, lhs_dilation, dimension_numbers, feature_group_count)
        if use_taps and setting == "auto":
            use_taps = platforms.current(platform) == "cpu" and (
                    tuple(rhs.shape[:2]) == (1, 1) or padding_fraction(
                            lhs.shape[1:3], rhs.shape[:2], rhs_dilation, padding)
                    >= AUTO_MIN_PADDING_FRACTION)
        if use_taps:
            return conv_by_taps(lhs, rhs, padding, rhs_dilation, precision)
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                        rhs_dilation, dimension_numbers, feature_group_count,
                                        precision=precision, **kwargs)

    return conv
