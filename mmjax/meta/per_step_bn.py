"""Per-step batch-norm weights and biases (MAML++'s "BNWB", Antoniou et al. 2019).

The batch-norm ``scale``/``bias`` leaves of a Flax parameter tree (those of the
``BatchStatNorm`` modules, the fused first Conv-4 block's included) are found by path
(:func:`batch_norm_leaves`); :func:`init_per_step_bn` copies them with a leading axis
``[num_steps + 1]``, and :func:`with_batch_norm` runs the model with one copy. The MAML++
learner (:mod:`mmjax.meta.maml_plus_plus`) runs the parameters after ``k`` inner steps with
copy ``k``; the copies are meta-learned, not adapted in the inner loop.
"""

from __future__ import annotations

from collections.abc import Mapping

import chex
import jax
import jax.numpy as jnp

from mmjax.meta.common import Params

# Flax module-name prefixes whose ``scale``/``bias`` parameters are batch norm's.
BATCH_NORM_MODULES = ("BatchStatNorm", "BatchNorm")
_BATCH_NORM_LEAVES = ("scale", "bias")


def _path_key(path: tuple) -> tuple:
    """A ``tree_flatten_with_path`` path as a tuple of plain dict keys."""
    return tuple(getattr(entry, "key", getattr(entry, "name", entry)) for entry in path)


def _path_name(key: tuple) -> str:
    return "".join(f"[{part!r}]" for part in key)


def batch_norm_leaves(params: Params) -> dict[tuple, chex.Array]:
    """The batch-norm ``scale``/``bias`` leaves of a Flax parameter tree, by path.

    A leaf is batch norm's when it is named ``scale`` or ``bias`` and its module's name starts
    with one of ``BATCH_NORM_MODULES`` (``BatchStatNorm_0``, ...). Returns ``{path: leaf}``,
    ``path`` a tuple of dict keys (``("params", "BatchStatNorm_0", "scale")``).

    Raises:
      ValueError: ``params`` has no such leaf (per-step batch norm needs one).
    """
    leaves = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        key = _path_key(path)
        if (
            len(key) >= 2
            and key[-1] in _BATCH_NORM_LEAVES
            and isinstance(key[-2], str)
            and key[-2].startswith(BATCH_NORM_MODULES)
        ):
            leaves[key] = leaf
    if not leaves:
        raise ValueError(
            "per_step_bn needs a model with batch-norm parameters (the scale/bias of a "
            f"module named {' or '.join(BATCH_NORM_MODULES)}_*); these parameters have none"
        )
    return leaves


def _nested(flat: dict[tuple, chex.Array]) -> dict:
    """``{path: leaf}`` as nested dicts."""
    tree: dict = {}
    for key, leaf in flat.items():
        node = tree
        for part in key[:-1]:
            node = node.setdefault(part, {})
        node[key[-1]] = leaf
    return tree


def init_per_step_bn(params: Params, *, num_steps: int) -> Params:
    """Per-step copies of ``params``' batch-norm leaves: each ``[C]`` leaf becomes ``[num_steps + 1, C]``.

    Every copy equals the model's own leaf, so at init the per-step model is MAML with its
    batch-norm parameters frozen in the inner loop. The result is nested dicts holding only
    the batch-norm paths of ``params`` (:func:`batch_norm_leaves`); copy ``k`` is used with the
    parameters after ``k`` inner steps (see :mod:`mmjax.meta.maml_plus_plus`).
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
        raise ValueError(f"num_steps must be an int >= 0; got {num_steps!r}")
    leaves = batch_norm_leaves(params)
    copies = {k: jnp.repeat(jnp.asarray(v)[None], num_steps + 1, axis=0) for k, v in leaves.items()}
    return _nested(copies)


def check_per_step_bn(per_step_bn: Params, params: Params, num_steps: int) -> None:
    """Checks that ``per_step_bn`` holds exactly ``params``' batch-norm paths, each ``[num_steps + 1, ...]``.

    Raises:
      ValueError: not nested dicts, a missing or extra path, or a leaf of the wrong shape
        (the message names the leaf and the expected shape).
    """
    expected = batch_norm_leaves(params)
    if not isinstance(per_step_bn, Mapping):
        raise ValueError(
            f"per_step_bn must be nested dicts of batch-norm copies (see init_per_step_bn); "
            f"got {type(per_step_bn).__name__}"
        )
    given = {_path_key(p): v for p, v in jax.tree_util.tree_flatten_with_path(per_step_bn)[0]}
    missing = [_path_name(k) for k in expected if k not in given]
    extra = [_path_name(k) for k in given if k not in expected]
    if missing or extra:
        raise ValueError(
            "per_step_bn must hold exactly the batch-norm leaves of the model (see "
            f"init_per_step_bn); missing {missing}, not batch norm's {extra}"
        )
    for key, leaf in expected.items():
        want = (num_steps + 1, *jnp.shape(leaf))
        if jnp.shape(given[key]) != want:
            raise ValueError(
                f"per_step_bn leaf {_path_name(key)} has shape {jnp.shape(given[key])}; "
                f"expected {want}: one copy per inner step and one for the query "
                f"(num_steps + 1 = {num_steps + 1})"
            )


def with_batch_norm(params: Params, copy: Params) -> Params:
    """``params`` with its batch-norm leaves replaced by those of ``copy`` (same paths, same shapes).

    ``copy`` is one step of :func:`init_per_step_bn`'s copies (every leaf indexed ``[k]``).
    """
    flat = {_path_key(p): v for p, v in jax.tree_util.tree_flatten_with_path(copy)[0]}
    return jax.tree_util.tree_map_with_path(lambda p, v: flat.get(_path_key(p), v), params)


def copy_at(per_step_bn: Params | None, index: int | slice) -> Params | None:
    """Copy ``index`` (or the copies of a slice) of every leaf; ``None`` stays ``None``."""
    return None if per_step_bn is None else jax.tree.map(lambda c: c[index], per_step_bn)
