"""Input checks shared by the entry points (issue #14: inputs that gave NaN or wrong results).

Two kinds of check, so the jitted hot path pays nothing:

* **Static** (shapes, dtypes, settings): read at trace time, free under ``jit``.
* **Value** (label ranges, finite rates, binary masks): run only when the value is concrete
  (an eager call, or a Python / numpy constant closed over by a jitted function). Inside
  ``jit``/``vmap``/``grad`` the values are tracers and nothing is read; each entry point
  documents what it does with a bad value there.
"""

from __future__ import annotations

import numbers
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x: Any) -> bool:
    """Whether ``x``'s values can be read now: not a tracer of ``jit``/``vmap``/``grad``."""
    return not isinstance(x, jax.core.Tracer)


def check_count(name: str, value: Any, minimum: int = 1) -> None:
    """Raises ``ValueError`` unless ``value`` is an int (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an int >= {minimum}")


def check_float_dtype(x: chex.Array, name: str) -> None:
    """Raises ``TypeError`` unless ``x`` is floating point (e.g. images scaled to ``[0, 1]``).

    Integer images (``uint8`` 0..255) are refused rather than converted: a silent rule such
    as "divide by 255" would be wrong for data already in another range.

    Args:
      x: any array, e.g. images ``[batch, height, width, channels]``.
      name: how the message names ``x``.
    """
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{name} must be floating point; got dtype {dtype}"
            + (
                " (convert images with x.astype(jnp.float32) / 255 for [0, 1])"
                if dtype == jnp.uint8
                else ""
            )
        )


def check_labels(labels: chex.Array, num_classes: int, name: str = "labels", why: str = "") -> None:
    """Checks concrete integer ``labels: [...]`` lie in ``[0, num_classes)``; no-op when traced.

    ``why`` is appended to the expected range in the message.

    Raises:
      ValueError: naming the out-of-range values and the first index holding one.
    """
    if not is_concrete(labels):
        return
    values = np.asarray(labels)
    bad = (values < 0) | (values >= num_classes)
    if np.any(bad):
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} must be class ids in [0, {num_classes}){why}; got values "
            f"{np.unique(values[bad])[:8].tolist()} (first at index {first})"
        )


def is_real_number(x: Any) -> bool:
    """Whether ``x`` is a real scalar: a Python/numpy number or a 0-d float/int array."""
    if isinstance(x, bool):
        return False
    if isinstance(x, numbers.Real):
        return True
    return (
        hasattr(x, "dtype")
        and jnp.ndim(x) == 0
        and (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer))
    )
