"""Mapping a per-task function over a task batch: ``vmap``, ``lax.scan`` or chunks of tasks.

Every learner of :mod:`mmjax.meta` lifts a per-task function ``fn(params, episode)`` (one
:class:`~mmjax.data.episodes.Episode`, no task axis) to a task batch (every leaf ``[tasks,
...]``) with :func:`map_over_tasks`, :func:`mean_over_tasks`, :func:`grad_over_tasks` or
:func:`metrics_per_task`; ``task_batching`` (:func:`resolve_task_batching`) chooses how.
Batch norm inside the model sees one task at a time either way (transductive per-task
statistics, as in the MAML reference code).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np

from mmjax.data.episodes import Episode
from mmjax.validation import is_concrete

Params = Any

TASK_BATCHINGS = ("auto", "vmap", "scan")


def resolve_task_batching(task_batching: str | int) -> str | int:
    """How a task batch is mapped over: ``"vmap"``, ``"scan"`` or a chunk size ``n >= 1``.

    ``"vmap"`` runs every task at once; ``"scan"`` runs one task per ``lax.scan`` iteration
    (a gradient is accumulated in the carry, so only one task's activations are alive); an
    int ``n`` scans over chunks of ``n`` tasks, vmapped inside a chunk. All give the same
    result up to float rounding. ``"auto"`` is ``"scan"`` on a single CPU device, where
    one task's working set stays in cache (time and XLA temporary memory of both:
    ``benchmarks/maml_orders.py --task_batching scan``, and ``vmap``), and ``"vmap"``
    elsewhere: on accelerators, and on several devices, where the task axis is what
    ``jit`` shards (a scanned axis cannot be split over devices).
    """
    if isinstance(task_batching, bool):
        raise ValueError(
            f"task_batching must be one of {TASK_BATCHINGS} or an int >= 1; got {task_batching!r}"
        )
    if isinstance(task_batching, (int, np.integer)):
        if task_batching < 1:
            raise ValueError(
                f"task_batching as a chunk size must be an int >= 1; got {task_batching!r}"
            )
        return int(task_batching)
    if task_batching not in TASK_BATCHINGS:
        raise ValueError(
            f"task_batching must be one of {TASK_BATCHINGS} or an int >= 1; got {task_batching!r}"
        )
    if task_batching == "auto":
        return "scan" if jax.default_backend() == "cpu" and jax.device_count() == 1 else "vmap"
    return task_batching


def chunk_size(task_batching: str | int) -> int | None:
    """``None`` for vmap, else the number of tasks per scan iteration (checked)."""
    mode = resolve_task_batching(task_batching)
    return None if mode == "vmap" else 1 if mode == "scan" else mode


def count_tasks(episodes: chex.ArrayTree) -> int:
    """The size of the leading task axis of ``episodes`` (raises if a leaf has none)."""
    leaves = jax.tree.leaves(episodes)
    if not leaves or jnp.ndim(leaves[0]) < 1:
        raise ValueError("episodes must have a leading task axis on every leaf")
    return jnp.shape(leaves[0])[0]


def check_episodes(episodes: Episode) -> int:
    """Checks a task batch: every leaf ``[tasks, ...]``, one label per example of each set.

    Static (free under ``jit``): ``support_labels: [tasks, support_size]``, ``query_labels:
    [tasks, query_size]`` and every input leaf ``[tasks, set_size, ...]``. When the labels
    are concrete integers (eager calls) they must also be ``>= 0`` and every query label must
    occur in its task's support labels (a class with no support example cannot be learned).
    A pytree that is not an `Episode` only needs a common leading task axis.

    Returns:
      The number of tasks.

    Raises:
      ValueError: naming the field, its shape and the axis that is wrong.
    """
    if not isinstance(episodes, Episode):
        return count_tasks(episodes)
    hint = (
        "a batch of episodes has a leading task axis on every leaf (for one Episode use "
        "task_loss, or add the axis with jax.tree.map(lambda x: x[None], episode))"
    )
    for field in ("support", "query"):
        shape = jnp.shape(getattr(episodes, f"{field}_labels"))
        if len(shape) < 2:
            raise ValueError(
                f"episodes.{field}_labels has shape {shape}; expected [tasks, {field}_size]: "
                + hint
            )
    num_tasks = jnp.shape(episodes.support_labels)[0]
    for field in ("support", "query"):
        label_shape = jnp.shape(getattr(episodes, f"{field}_labels"))
        size = label_shape[:2]
        if size[0] != num_tasks:
            raise ValueError(
                f"episodes.{field}_labels has shape {label_shape}; expected [tasks={num_tasks}, "
                f"{field}_size] (axis 0 of episodes.support_labels)"
            )
        for path, leaf in jax.tree_util.tree_leaves_with_path(getattr(episodes, f"{field}_inputs")):
            if jnp.shape(leaf)[:2] != size:
                raise ValueError(
                    f"episodes.{field}_inputs{jax.tree_util.keystr(path)} has shape "
                    f"{jnp.shape(leaf)}; expected [tasks, {field}_size, ...] = [{size[0]}, "
                    f"{size[1]}, ...] (axes 0 and 1 of episodes.{field}_labels): " + hint
                )
    support, query = episodes.support_labels, episodes.query_labels
    if (
        is_concrete(support)
        and is_concrete(query)
        and jnp.issubdtype(jnp.result_type(support), jnp.integer)
        and jnp.issubdtype(jnp.result_type(query), jnp.integer)
        and np.ndim(support) == np.ndim(query) == 2
    ):
        support, query = np.asarray(support), np.asarray(query)
        for field, values in (("support_labels", support), ("query_labels", query)):
            if np.any(values < 0):
                raise ValueError(
                    f"episodes.{field} must be class ids in [0, ways); got negative values "
                    f"{np.unique(values[values < 0])[:8].tolist()}"
                )
        for task in range(num_tasks):
            missing = np.setdiff1d(query[task], support[task])
            if missing.size:
                raise ValueError(
                    f"episodes.query_labels of task {task} hold {missing[:8].tolist()}, absent "
                    f"from its support_labels {np.unique(support[task])[:8].tolist()}: labels "
                    "must be class ids in [0, ways), each with support examples"
                )
    return num_tasks


def map_over_tasks(
    fn: Callable, params: Params, episodes: Episode, task_batching: str | int = "auto"
) -> Any:
    """``fn(params, episode)`` for every task; outputs stacked on a leading task axis.

    ``episodes`` leaves are ``[tasks, ...]``; ``task_batching`` as in
    :func:`resolve_task_batching`.
    """
    check_episodes(episodes)
    chunk = chunk_size(task_batching)
    if chunk is None:
        return jax.vmap(fn, in_axes=(None, 0))(params, episodes)
    return jax.lax.map(
        lambda episode: fn(params, episode), episodes, batch_size=chunk if chunk > 1 else None
    )


def mean_over_tasks(
    per_task: Callable, params: Params, episodes: Episode, task_batching: str | int = "auto"
) -> tuple[chex.Array, dict]:
    """Lifts ``per_task(params, episode) -> (loss, metrics)`` to a task batch.

    ``episodes`` leaves are ``[tasks, ...]``; ``per_task`` returns a scalar loss and a dict of
    scalar metrics for one task. Returns the mean loss ``[]`` and mean metrics over the tasks
    (mapped over by ``task_batching``, see :func:`resolve_task_batching`).
    """
    losses, metrics = map_over_tasks(per_task, params, episodes, task_batching)
    return jnp.mean(losses), jax.tree.map(jnp.mean, metrics)


def grad_over_tasks(
    per_task: Callable, params: Params, episodes: Episode, task_batching: str | int = "auto"
) -> tuple[Params, dict]:
    """Gradient of :func:`mean_over_tasks` w.r.t. ``params``, and the batch-mean metrics.

    With ``task_batching`` ``"scan"`` or a chunk size, each scan iteration takes the
    gradient of its own tasks and adds it to the carry, so the backward pass of one chunk
    runs while its activations are still in cache and nothing is kept across chunks.
    """
    check_episodes(episodes)
    chunk = chunk_size(task_batching)
    if chunk is None:
        (_, metrics), grads = jax.value_and_grad(
            functools.partial(mean_over_tasks, per_task, task_batching="vmap"), has_aux=True
        )(params, episodes)
        return grads, metrics
    num_tasks = count_tasks(episodes)
    full, rest = divmod(num_tasks, chunk)
    per_task_grad = jax.value_and_grad(per_task, has_aux=True)
    batched_grad = jax.vmap(per_task_grad, in_axes=(None, 0))

    def chunk_grad(chunk_episodes):  # leaves [chunk, ...] -> summed grads, metrics [chunk]
        (_, metrics), grads = batched_grad(params, chunk_episodes)
        return jax.tree.map(lambda g: jnp.sum(g, axis=0), grads), metrics

    def body(total, chunk_episodes):
        if chunk == 1:
            (_, metrics), grads = per_task_grad(params, chunk_episodes)
        else:
            grads, metrics = chunk_grad(chunk_episodes)
        return jax.tree.map(jnp.add, total, grads), metrics

    head = jax.tree.map(
        lambda x: x[: full * chunk].reshape(
            (full,) + ((chunk,) if chunk > 1 else ()) + x.shape[1:]
        ),
        episodes,
    )
    total, metrics = jax.lax.scan(body, jax.tree.map(jnp.zeros_like, params), head)
    metrics = jax.tree.map(
        lambda m: m.reshape((full * chunk,) + m.shape[(2 if chunk > 1 else 1) :]), metrics
    )
    if rest:
        grads, rest_metrics = chunk_grad(jax.tree.map(lambda x: x[full * chunk :], episodes))
        total = jax.tree.map(jnp.add, total, grads)
        metrics = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), metrics, rest_metrics)
    grads = jax.tree.map(lambda g: g / num_tasks, total)
    return grads, jax.tree.map(jnp.mean, metrics)


def metrics_per_task(
    per_task: Callable, params: Params, episodes: Episode, task_batching: str | int = "auto"
) -> dict:
    """Metrics of ``per_task`` for every task of the batch (leading task axis kept)."""
    return map_over_tasks(per_task, params, episodes, task_batching)[1]
