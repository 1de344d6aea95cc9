"""On-device sampling of few-shot episodes in pure JAX.

``data`` is a pytree whose leaves are arrays ``[classes, examples, ...]`` sharing the class
and example indexing (e.g. ``{"image": [C, E, H, W, 1], "strokes": [C, E, L, 3]}``). An
episode draws ``ways`` distinct classes and ``shots + queries`` distinct examples of each;
the same (class, example) indices are used for every leaf. Label ``i`` is the ``i``-th
drawn class, so labels are a random permutation with respect to class ids. Support and
query sets are class-major: rows ``i * shots ... (i + 1) * shots - 1`` of the support set
are class ``i``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from mmjax.data.omniglot import ClassImages


class Episode(NamedTuple):
    """One few-shot task (add a leading [batch] axis for `sample_episodes`).

    Attributes:
      support_inputs: pytree like ``data``, leaves [ways * shots, ...].
      support_labels: [ways * shots] int32 in [0, ways).
      query_inputs: pytree like ``data``, leaves [ways * queries, ...].
      query_labels: [ways * queries] int32 in [0, ways).
    """

    support_inputs: chex.ArrayTree
    support_labels: chex.Array
    query_inputs: chex.ArrayTree
    query_labels: chex.Array


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}={value!r} must be an int >= 1")


def validate_episode_spec(
    num_classes: int, examples_per_class: int, *, ways: int, shots: int, queries: int
) -> None:
    """Checks that ``ways``-way ``shots``-shot episodes with ``queries`` queries fit the data.

    Raises:
      ValueError: a count is not an int >= 1, ``ways > num_classes`` or
        ``shots + queries > examples_per_class``.
    """
    for name, value in (("ways", ways), ("shots", shots), ("queries", queries)):
        _check_count(name, value)
    if ways > num_classes:
        raise ValueError(f"ways={ways} exceeds the {num_classes} classes available")
    if shots + queries > examples_per_class:
        raise ValueError(
            f"shots + queries = {shots + queries} (shots={shots}, queries={queries}) exceeds "
            f"the {examples_per_class} examples per class"
        )


def classes_and_examples(data: chex.ArrayTree) -> tuple[int, int]:
    """The shared leading [classes, examples] shape of every leaf of ``data``.

    Raises:
      ValueError: no leaf, a leaf with fewer than 2 axes, or leaves that disagree.
    """
    leaves, _ = jax.tree_util.tree_flatten_with_path(data)
    if not leaves:
        raise ValueError("data has no array leaf; expected leaves shaped [classes, examples, ...]")
    first_path, first = leaves[0]
    for path, leaf in leaves:
        shape = np.shape(leaf)
        if len(shape) < 2:
            raise ValueError(
                f"data leaf {jax.tree_util.keystr(path) or '<root>'} has shape {shape}; "
                "expected [classes, examples, ...]"
            )
        if shape[:2] != np.shape(first)[:2]:
            raise ValueError(
                f"data leaf {jax.tree_util.keystr(path)} has [classes, examples] = {shape[:2]}, "
                f"but leaf {jax.tree_util.keystr(first_path)} has {np.shape(first)[:2]}; all "
                "leaves must share the class and example indexing"
            )
    return tuple(int(d) for d in np.shape(first)[:2])


def _sample(
    key: chex.PRNGKey, data: chex.ArrayTree, ways: int, shots: int, queries: int
) -> Episode:
    num_classes, num_examples = classes_and_examples(data)
    # top_k of i.i.d. uniforms gives distinct indices in uniformly random order. One draw
    # for classes and examples: far cheaper to compile on CPU than permutation + split.
    noise = jax.random.uniform(key, (num_classes + ways * num_examples,))
    _, classes = jax.lax.top_k(noise[:num_classes], ways)  # [ways]
    _, examples = jax.lax.top_k(
        noise[num_classes:].reshape(ways, num_examples), shots + queries
    )  # [ways, shots + queries], distinct within a row.

    def gather(leaf):
        picked = jnp.asarray(leaf)[classes[:, None], examples]  # [ways, shots + queries, ...]
        support = picked[:, :shots].reshape((ways * shots,) + picked.shape[2:])
        query = picked[:, shots:].reshape((ways * queries,) + picked.shape[2:])
        return support, query

    leaves, treedef = jax.tree_util.tree_flatten(data)
    pairs = [gather(leaf) for leaf in leaves]
    labels = jnp.arange(ways, dtype=jnp.int32)
    return Episode(
        support_inputs=jax.tree_util.tree_unflatten(treedef, [s for s, _ in pairs]),
        support_labels=jnp.repeat(labels, shots),
        query_inputs=jax.tree_util.tree_unflatten(treedef, [q for _, q in pairs]),
        query_labels=jnp.repeat(labels, queries),
    )


@functools.partial(jax.jit, static_argnames=("ways", "shots", "queries"))
def sample_episode(
    key: chex.PRNGKey, data: chex.ArrayTree, *, ways: int, shots: int, queries: int
) -> Episode:
    """Samples one ``ways``-way ``shots``-shot episode with ``queries`` queries per class.

    Args:
      key: PRNG key.
      data: pytree of arrays [classes, examples, ...] (device arrays; see `to_device`).
      ways, shots, queries: static episode sizes.

    Returns:
      `Episode` with support leaves [ways * shots, ...], query leaves [ways * queries, ...].
    """
    validate_episode_spec(*classes_and_examples(data), ways=ways, shots=shots, queries=queries)
    return _sample(key, data, ways, shots, queries)


@functools.partial(jax.jit, static_argnames=("batch_size", "ways", "shots", "queries"))
def sample_episodes(
    key: chex.PRNGKey,
    data: chex.ArrayTree,
    *,
    batch_size: int,
    ways: int,
    shots: int,
    queries: int,
) -> Episode:
    """Samples ``batch_size`` independent episodes (`sample_episode` vmapped over split keys).

    Returns:
      `Episode` whose leaves have a leading [batch_size] axis.
    """
    _check_count("batch_size", batch_size)
    validate_episode_spec(*classes_and_examples(data), ways=ways, shots=shots, queries=queries)
    keys = jax.random.split(key, batch_size)
    return jax.vmap(lambda k: _sample(k, data, ways, shots, queries))(keys)


def to_device(data: ClassImages | chex.ArrayTree) -> chex.ArrayTree:
    """Puts ``data`` on the device: `ClassImages` -> its images ``[C, E, H, W, 1]``; any other
    pytree of arrays (leaves ``[C, E, ...]``) leaf by leaf."""
    if isinstance(data, ClassImages):
        return jnp.asarray(data.images)
    return jax.tree.map(jnp.asarray, data)
