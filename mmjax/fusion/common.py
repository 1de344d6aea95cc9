"""Shared helpers for the fusion layers: validation, masking, masked reductions.

Conventions used by every fusion module in :mod:`mmjax.fusion`:

* ``features`` is a sequence (tuple or list) of ``M`` arrays, modality ``m`` shaped
  ``[batch, D_m]``; the ``D_m`` may differ between modalities.
* ``mask`` is ``[B, M]`` (batch, modalities; bool, or numbers 0/1), the layout
  :class:`mmjax.data.Episode` and :class:`mmjax.nn.MultimodalEncoder` use; ``True``/1 means the
  modality is present for that sample. A ``[M, B]`` mask is refused (unless ``M == B``, where
  the shape cannot tell).
* Inside a layer the features are stacked modality-first, ``[M, B, d]``; the layers transpose
  the mask to match that stack themselves (``present.T``), never the caller.
* A masked modality has no influence on the output: its features are replaced by zeros with
  :func:`jnp.where` before any computation, so the output is unchanged whatever the masked
  values are (NaN and inf included) and the gradient w.r.t. them is exactly zero.
* A sample with every modality masked is an error. :func:`check_mask` raises ``ValueError``
  for it when the mask is concrete (eager calls). Under ``jit``/``vmap``/``grad`` of the mask
  the values are unknown at trace time, so nothing can be raised; there the fusion modules
  return a row of zeros for such a sample (never NaN).
* A numeric mask must hold only 0 and 1: other values (0.5, 2, NaN) raise ``ValueError`` when
  the mask is concrete. A traced mask cannot be read, so there **any nonzero value counts as
  present** (it is a presence flag, never a weight); binarise soft masks yourself.
* Parameters are tied to the number of modalities (one ``head_m``/``project_m``/... per
  modality): applying a layer's parameters to a different number of modalities raises
  ``ValueError`` (:func:`check_modality_params`), at trace time, so also under ``jit``.
"""

from __future__ import annotations

from typing import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _is_traced(x: chex.Array) -> bool:
    return isinstance(x, jax.core.Tracer)


def check_width(module: str, name: str, value: object) -> None:
    """Raises ``ValueError`` unless the output width ``value`` is an int ``>= 1``.

    ``module`` and ``name`` (e.g. ``"AttentionFusion"``, ``"features_out"``) name it in the
    message; checked before any parameter is created (jax's initialisers fail obscurely).
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{module} {name}={value!r} must be an int >= 1")


def check_modality_params(
    module: nn.Module, prefix: str, num_modalities: int, offset: int = 0
) -> None:
    """Checks the bound parameters hold one submodule ``{prefix}{m}`` per modality.

    ``offset``: modalities without such a submodule (FiLM's modulated modality 0).

    A fusion layer creates one submodule per modality (``head_0``, ``head_1``, ...); without
    this check, parameters made for 2 modalities applied to 1 would silently drop ``head_1``.
    A no-op while initialising. Reads parameter names only, so it is free under ``jit``.

    Raises:
      ValueError: naming the layer, the parameter names found and the modality count given.
    """
    if module.is_initializing():
        return
    names = sorted(
        k
        for k in module.variables.get("params", {})
        if k.startswith(prefix) and k[len(prefix) :].isdigit()
    )
    if len(names) != num_modalities - offset:
        raise ValueError(
            f"{type(module).__name__} params were made for {len(names) + offset} modalities "
            f"({names}) but features and mask give {num_modalities} (features has one array "
            "per modality, mask [B, M] = [batch, num_modalities]); use params initialised for this "
            "number of modalities"
        )


def check_input_width(module: nn.Module, name: str, width: int, what: str) -> None:
    """Checks the bound Dense ``name``'s kernel takes ``width`` inputs (free under ``jit``).

    ``what`` says where ``width`` comes from (e.g. the concatenated features), so a layer
    applied to other modalities than its parameters were made for gets an mmjax message
    instead of flax's ``ScopeParamShapeError``. A no-op while initialising.
    """
    if module.is_initializing() or not module.has_variable("params", name):
        return
    kernel = module.variables["params"][name].get("kernel")
    if kernel is not None and np.shape(kernel)[0] != width:
        raise ValueError(
            f"{type(module).__name__} params ({name} kernel {tuple(np.shape(kernel))}) take "
            f"{np.shape(kernel)[0]} inputs but {what} give {width}; use params initialised for "
            "these modalities and widths"
        )


def validate_features(features: Sequence[chex.Array], mask: chex.Array) -> tuple[int, int]:
    """Checks the static shapes of ``features`` and ``mask``.

    Args:
      features: sequence of ``M`` arrays, modality ``m`` shaped ``[batch, D_m]``.
      mask: ``[B, M]`` presence mask (batch, modalities).

    Returns:
      ``(M, B)``.

    Raises:
      ValueError: if ``features`` is not a non-empty sequence of rank-2 arrays with one batch
        size, or if ``mask`` is not shaped exactly ``[B, M]`` (a ``[M, B]`` mask included).
    """
    if not isinstance(features, (tuple, list)):
        raise ValueError(
            "features must be a tuple or list of M arrays shaped [batch, D_m]; got "
            f"{type(features).__name__}"
            + (f" with shape {tuple(features.shape)}" if hasattr(features, "shape") else "")
            + "."
        )
    if not features:
        raise ValueError("features must hold at least one modality; got an empty sequence.")
    num_modalities = len(features)
    batch = None
    for m, x in enumerate(features):
        shape = tuple(np.shape(x))
        if len(shape) != 2:
            raise ValueError(
                f"features[{m}] has shape {shape}; expected a rank-2 array [batch, D_{m}]."
            )
        if batch is None:
            batch = shape[0]
        elif shape[0] != batch:
            raise ValueError(
                f"features[{m}] has shape {shape}; expected batch size {batch} (that of "
                f"features[0]), i.e. shape ({batch}, D_{m})."
            )
    mask_shape = tuple(np.shape(mask))
    if mask_shape != (batch, num_modalities):
        hint = (
            " It is modality-first [M, B]; pass mask.T."
            if mask_shape == (num_modalities, batch)
            else ""
        )
        raise ValueError(
            f"mask has shape {mask_shape}; expected [B, M] = [batch, num_modalities] = "
            f"[{batch}, {num_modalities}].{hint}"
        )
    return num_modalities, batch


def check_mask(mask: chex.Array) -> jax.Array:
    """Checks a presence mask and returns it as booleans.

    For a concrete mask (eager call) this raises if a sample has every modality masked or if a
    numeric mask holds values other than 0 and 1. For a traced mask (inside ``jit``, ``vmap``,
    ...) the values are unknown, so only the rank is checked: any nonzero value then counts as
    present, and the fusion modules return zeros for an all-masked sample instead of raising.

    Args:
      mask: ``[B, M]`` bool or 0/1 numbers.

    Returns:
      ``[B, M]`` bool array, ``True`` where the modality is present.

    Raises:
      ValueError: for a mask that is not rank 2, or (concrete masks only) that holds values
        other than 0/1 or has a sample with no modality present.
    """
    shape = tuple(np.shape(mask))
    if len(shape) != 2:
        raise ValueError(
            f"mask has shape {shape}; expected a rank-2 array [B, M] = [batch, num_modalities]."
        )
    if not _is_traced(mask):
        values = np.asarray(mask)
        if values.dtype != np.bool_:
            if not np.all((values == 0) | (values == 1)):
                raise ValueError(
                    f"mask of shape {shape} must hold only 0/1 (or booleans); got values "
                    f"{np.unique(values)[:8].tolist()}."
                )
        all_masked = ~np.any(values.astype(bool), axis=1)
        if np.any(all_masked):
            raise ValueError(
                f"mask of shape {shape} has samples with every modality masked: "
                f"{np.flatnonzero(all_masked).tolist()}; each sample needs at least one modality "
                "present."
            )
    mask = jnp.asarray(mask)
    return mask if mask.dtype == jnp.bool_ else mask != 0


def mask_features(features: Sequence[chex.Array], present: chex.Array) -> list[jax.Array]:
    """Replaces the features of masked modalities by zeros (gradient-safe).

    Uses :func:`jnp.where`, so NaN/inf in masked entries do not propagate and the gradient
    w.r.t. them is exactly zero.

    Args:
      features: sequence of ``M`` arrays ``[batch, D_m]``.
      present: ``[B, M]`` bool mask.

    Returns:
      List of ``M`` arrays ``[batch, D_m]``, zero where the modality is masked.
    """
    return [jnp.where(present[:, m, None], jnp.asarray(x), 0) for m, x in enumerate(features)]


def prepare(features: Sequence[chex.Array], mask: chex.Array) -> tuple[list[jax.Array], jax.Array]:
    """Validates the inputs of a fusion module and masks its features.

    Args:
      features: sequence of ``M`` arrays ``[batch, D_m]``.
      mask: ``[B, M]`` bool or 0/1.

    Returns:
      ``(masked_features, present)``: the ``M`` arrays with masked rows set to zero, and the
      ``[B, M]`` bool mask.
    """
    validate_features(features, mask)
    present = check_mask(mask)
    return mask_features(features, present), present


def masked_mean(values: chex.Array, mask: chex.Array, axis: int = 0) -> jax.Array:
    """Mean of ``values`` over ``axis`` counting only entries where ``mask`` is set.

    Args:
      values: e.g. ``[M, batch, ...]``.
      mask: bool or 0/1, broadcastable to ``values`` (e.g. ``[M, batch, 1]``).
      axis: the reduced axis (default: the modality axis 0).

    Returns:
      ``values`` reduced over ``axis``; zeros where no entry is set (never NaN). Masked entries
      receive exactly zero gradient, even when they hold NaN or inf.
    """
    mask = jnp.broadcast_to(jnp.asarray(mask).astype(bool), jnp.shape(values))
    total = jnp.sum(jnp.where(mask, values, 0), axis=axis)
    count = jnp.sum(mask, axis=axis)
    return total / jnp.maximum(count, 1).astype(total.dtype)


def masked_softmax(logits: chex.Array, mask: chex.Array, axis: int = 0) -> jax.Array:
    """Softmax over ``axis`` restricted to the entries where ``mask`` is set.

    Masked entries get exactly zero weight (and zero gradient, even if they hold NaN or inf);
    present entries sum to one. A slice with every entry masked gets all-zero weights, not NaN.

    Args:
      logits: e.g. ``[M, batch]`` or ``[M, batch, d]``.
      mask: bool or 0/1, broadcastable to ``logits``.
      axis: the normalised axis (default: the modality axis 0).

    Returns:
      Weights shaped like ``logits``.
    """
    logits = jnp.asarray(logits)
    mask = jnp.broadcast_to(jnp.asarray(mask).astype(bool), logits.shape)
    shift = jnp.max(jnp.where(mask, logits, -jnp.inf), axis=axis, keepdims=True)
    shift = jax.lax.stop_gradient(jnp.where(jnp.isfinite(shift), shift, 0))
    exp = jnp.where(mask, jnp.exp(jnp.where(mask, logits - shift, 0)), 0)
    total = jnp.sum(exp, axis=axis, keepdims=True)
    return exp / jnp.where(total > 0, total, 1)


def zero_all_masked(outputs: chex.Array, present: chex.Array) -> jax.Array:
    """Sets the output rows of samples with no modality present to zero.

    Args:
      outputs: ``[batch, ...]``.
      present: ``[B, M]`` bool mask.

    Returns:
      ``outputs`` with the rows of all-masked samples replaced by zeros.
    """
    any_present = jnp.any(present, axis=1)
    any_present = any_present.reshape(any_present.shape + (1,) * (outputs.ndim - 1))
    return jnp.where(any_present, outputs, 0)


def concat_masked(
    features: Sequence[chex.Array], present: chex.Array, indicators: bool = True
) -> jax.Array:
    """Concatenates already-masked features, optionally with the mask as indicator features.

    Args:
      features: ``M`` arrays ``[batch, D_m]`` (masked rows already zero).
      present: ``[B, M]`` bool mask.
      indicators: append the mask as ``M`` float features.

    Returns:
      ``[batch, sum_m D_m (+ M)]``.
    """
    parts = list(features)
    if indicators:
        dtype = jnp.result_type(*features)
        parts.append(present.astype(dtype))
    return jnp.concatenate(parts, axis=-1)
