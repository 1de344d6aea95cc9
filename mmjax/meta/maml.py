"""Model-Agnostic Meta-Learning (Finn et al. 2017) as pure functions over pytrees.

The inner loop is SGD on the support set, run by ``lax.scan`` with ``jax.grad`` inside,
so the meta-gradient is second order by default; ``first_order=True`` stops the gradient
through the inner gradients (FOMAML). A task batch is mapped over with ``jax.vmap`` or
with ``lax.scan`` one task (or chunk of tasks) at a time, chosen by ``task_batching`` (see
:func:`resolve_task_batching`); either way batch norm inside the model sees one task at a
time (transductive per-task statistics, as in the MAML reference code).

A *loss function* here is ``loss_fn(params, inputs, labels) -> (loss, metrics)`` with a
scalar ``loss`` and a dict of scalar ``metrics``; ``classification_loss(apply_fn)``
builds one from a Flax ``apply``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.errors import ScopeParamShapeError

from mmjax.data.episodes import Episode
from mmjax.validation import check_labels, is_concrete, is_real_number
from mmjax.meta import meta_gradients

Params = Any
LossFn = Callable[[Params, chex.ArrayTree, chex.Array], tuple[chex.Array, dict]]


def classification_loss(apply_fn: Callable[[Params, chex.ArrayTree], chex.Array]) -> LossFn:
    """Softmax cross-entropy loss with accuracy, from ``apply_fn(params, inputs) -> logits``.

    Returns ``loss_fn(params, inputs, labels) -> (loss, {"loss", "accuracy"})`` with
    ``inputs`` leaves ``[batch, ...]``, ``labels: [batch]`` ints in ``[0, ways)`` and logits
    ``[batch, ways]``; ``loss`` and ``accuracy`` are scalar means over the batch.

    Labels outside ``[0, ways)`` (``ways`` = the logits' last axis, e.g. a ``Classifier``
    whose ``num_classes`` is not the episode's ways) raise ``ValueError`` when the labels are
    concrete (eager calls). When they are traced (inside ``jit``/``vmap``) nothing can be
    raised without slowing the step, so the loss is NaN instead (never a finite wrong value:
    a negative label would otherwise index from the end); a NaN guard such as
    ``make_meta_train_step(skip_nonfinite=True)`` or the trainer's ``nan_policy`` catches it.
    To check a data pipeline, call :func:`meta_loss` once outside ``jit``
    (:func:`check_episodes` then reads the labels).
    """

    def loss_fn(params: Params, inputs: chex.ArrayTree, labels: chex.Array):
        if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
            raise TypeError(
                f"labels must be integer class ids in [0, ways); got dtype {jnp.result_type(labels)}"
            )
        try:
            logits = apply_fn(params, inputs)
        except ScopeParamShapeError as error:
            shapes = jax.tree.map(jnp.shape, inputs)
            raise ValueError(
                f"params do not fit inputs of shapes {shapes} (leading axis: examples of one "
                f"task; a task axis belongs outside, see meta_loss): {error}"
            ) from error
        if jnp.shape(labels) != jnp.shape(logits)[:-1]:
            raise ValueError(
                f"labels has shape {jnp.shape(labels)}; expected {jnp.shape(logits)[:-1]}, "
                f"one label per row of the logits {jnp.shape(logits)}"
            )
        ways = jnp.shape(logits)[-1]
        check_labels(labels, ways, why=f" (the logits' {ways} classes: the model's ways)")
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        if not is_concrete(labels):  # traced: an out-of-range label makes the loss NaN
            losses = jnp.where((labels >= 0) & (labels < ways), losses, jnp.nan)
        loss = losses.mean()
        accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
        return loss, {"loss": loss, "accuracy": accuracy}

    return loss_fn


def check_inner_lr(inner_lr: float | Params, params: Params, *, signed: bool = False) -> None:
    """Checks a per-parameter learning-rate pytree against ``params`` (Meta-SGD style).

    A scalar is always accepted here (:func:`adapt` checks its value). A pytree must have the
    structure of ``params``, each leaf of shape ``()`` or that of its parameter, and (when
    concrete) entries that are finite and ``> 0``; ``signed=True`` allows negative entries
    (Meta-SGD's meta-learned rates, which also learn the update's direction).

    Raises:
      ValueError: naming the first leaf whose path, shape or values are wrong.
      TypeError: a leaf that is not a number or a numeric array.
    """
    if _is_scalar(inner_lr):
        return
    lr_leaves = dict(jax.tree_util.tree_leaves_with_path(inner_lr))
    param_leaves = dict(jax.tree_util.tree_leaves_with_path(params))
    for path, leaf in param_leaves.items():
        name = jax.tree_util.keystr(path)
        if path not in lr_leaves:
            raise ValueError(f"inner_lr has no leaf {name}; it must be a scalar or match params")
        lr_shape = np.shape(lr_leaves[path])
        if lr_shape not in ((), jnp.shape(leaf)):
            raise ValueError(
                f"inner_lr leaf {name} has shape {lr_shape}; expected () or {jnp.shape(leaf)}"
            )
    extra = [jax.tree_util.keystr(p) for p in lr_leaves if p not in param_leaves]
    if extra:
        raise ValueError(f"inner_lr has leaves absent from params: {extra}")
    _check_rate_values(inner_lr, signed=signed)


def _check_rate_values(inner_lr: Params, *, signed: bool) -> None:
    """Every concrete leaf of a rate pytree is a finite number (and ``> 0`` unless signed)."""
    for path, rate in jax.tree_util.tree_leaves_with_path(inner_lr):
        name = jax.tree_util.keystr(path)
        if not (is_real_number(rate) or _is_numeric_array(rate)):
            raise TypeError(
                f"inner_lr leaf {name} must be a number or a numeric array; got {rate!r} "
                f"({type(rate).__name__})"
            )
        if not is_concrete(rate):
            continue
        values = np.asarray(rate, np.float64)
        bad = ~np.isfinite(values) if signed else ~(np.isfinite(values) & (values > 0))
        if np.any(bad):
            raise ValueError(
                f"inner_lr leaf {name} must hold finite rates{'' if signed else ' > 0'}; got "
                f"{int(bad.sum())} that are not, e.g. {values[bad].ravel()[:4].tolist()}"
            )


def _is_numeric_array(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and (
        jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
    )


def _is_scalar(x: Any) -> bool:
    return not isinstance(x, (dict, list, tuple)) and jnp.ndim(x) == 0


def _sgd_update(params: Params, grads: Params, inner_lr: float | Params) -> Params:
    if _is_scalar(inner_lr):
        return jax.tree.map(lambda p, g: p - inner_lr * g, params, grads)
    return jax.tree.map(lambda p, g, lr: p - lr * g, params, grads, inner_lr)


def adapt(
    params: Params,
    inputs: chex.ArrayTree,
    labels: chex.Array,
    *,
    loss_fn: LossFn,
    inner_lr: float | Params,
    num_steps: int,
    first_order: bool = False,
    remat: bool = False,
    unroll: int | bool = 1,
    signed_rates: bool = False,
    meta_gradient: str | meta_gradients.MetaGradient = "exact",
) -> tuple[Params, chex.Array]:
    """Runs ``num_steps`` of SGD on ``loss_fn`` from ``params`` (MAML's inner loop).

    Args:
      params: initial parameters (the meta-parameters).
      inputs: support inputs, leaves ``[support_size, ...]``.
      labels: ``[support_size]`` labels.
      loss_fn: ``(params, inputs, labels) -> (loss, metrics)``.
      inner_lr: scalar, or a pytree of per-parameter rates shaped like ``params``.
      num_steps: number of inner SGD steps (0 returns ``params`` unchanged).
      first_order: stop gradients through the inner gradients (FOMAML).
      remat: rematerialise each inner step in the backward pass (``jax.checkpoint``), so
        memory stays flat as ``num_steps`` grows, at the cost of recomputation.
      unroll: ``lax.scan`` unroll factor of the inner loop (``True``: fully unrolled). Same
        result; fully unrolled, XLA's ``cost_analysis()`` counts every inner step (a rolled
        loop's body is counted once), and small loops may run faster on CPU.
      signed_rates: accept negative per-parameter rates (Meta-SGD's meta-learned ones); by
        default every concrete rate must be finite and ``> 0`` (NaN/inf are always refused).
      meta_gradient: ``"exact"``, ``"first_order"``, ``"truncated"``, ``"implicit"`` or a
        :class:`~mmjax.meta.meta_gradients.MetaGradient` (annealing needs :func:`task_loss`).

    Returns:
      ``(adapted_params, losses)`` with ``losses: [num_steps]`` the support loss before
      each step.
    """
    _check_settings(inner_lr=inner_lr, num_steps=num_steps, signed=signed_rates)
    check_inner_lr(inner_lr, params, signed=signed_rates)
    if not _is_legacy(meta_gradient):
        spec = meta_gradients.meta_gradient_spec(meta_gradient, first_order=first_order)
        if spec.annealed:
            raise ValueError("first_order_until needs the meta-step: use task_loss(meta_step=...)")
        settings = {"loss_fn": loss_fn, "inner_lr": inner_lr, "num_steps": num_steps}
        settings.update(meta_gradient=spec, remat=remat, unroll=unroll)
        return meta_gradients.adapt(params, inputs, labels, **settings)
    _check_support(inputs, labels)

    def step(current, _):
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(current, inputs, labels)
        if first_order:
            grads = jax.lax.stop_gradient(grads)
        return _sgd_update(current, grads, inner_lr), loss

    if remat:
        step = jax.checkpoint(step)
    unroll = num_steps if unroll is True else int(unroll)
    return jax.lax.scan(step, params, None, length=num_steps, unroll=max(unroll, 1))


def task_loss(
    params: Params,
    episode: Episode,
    *,
    loss_fn: LossFn,
    inner_lr: float | Params,
    num_steps: int,
    first_order: bool = False,
    remat: bool = False,
    unroll: int | bool = 1,
    signed_rates: bool = False,
    meta_gradient: str | meta_gradients.MetaGradient = "exact",
    meta_step: chex.Array | None = None,
) -> tuple[chex.Array, dict]:
    """Adapts on the support set, then returns the query loss and metrics of one task.

    ``episode`` is one `Episode` (support leaves ``[ways * shots, ...]``, query leaves
    ``[ways * queries, ...]``, no task axis); the loss and metrics are scalars.
    ``signed_rates``: see :func:`adapt`.

    Metrics: the query metrics of ``loss_fn`` after adaptation, plus ``support_loss``
    (the support loss before adaptation; equals the query-free loss when ``num_steps=0``).

    ``meta_gradient`` as in :func:`adapt`; with ``first_order_until > 0`` the scalar
    ``meta_step`` (traced) picks first order or ``meta_gradient.mode`` by one ``lax.cond``.
    """
    for field in ("support_labels", "query_labels"):
        labels = getattr(episode, field)
        if jnp.issubdtype(jnp.result_type(labels), jnp.integer) and jnp.ndim(labels) != 1:
            raise ValueError(
                f"episode.{field} has shape {jnp.shape(labels)}; expected [examples]: "
                "task_loss takes one Episode without a task axis (meta_loss takes a batch)"
            )
    if not _is_legacy(meta_gradient):
        spec = meta_gradients.meta_gradient_spec(meta_gradient, first_order=first_order)
        if spec.annealed:
            early = meta_gradients.annealed_first_order(spec, meta_step)
            settings = {"loss_fn": loss_fn, "inner_lr": inner_lr, "num_steps": num_steps}
            settings.update(remat=remat, unroll=unroll)

            def branch(mode):
                mode_spec = spec._replace(mode=mode, first_order_until=0)
                return lambda p: task_loss(p, episode, meta_gradient=mode_spec, **settings)

            return jax.lax.cond(early, branch("first_order"), branch(spec.mode), params)
        meta_gradient, first_order = spec, False
    adapted, inner_losses = adapt(
        params,
        episode.support_inputs,
        episode.support_labels,
        loss_fn=loss_fn,
        inner_lr=inner_lr,
        num_steps=num_steps,
        first_order=first_order,
        remat=remat,
        unroll=unroll,
        signed_rates=signed_rates,
        meta_gradient=meta_gradient,
    )
    loss, metrics = loss_fn(adapted, episode.query_inputs, episode.query_labels)
    metrics = dict(metrics)
    if num_steps > 0:
        metrics["support_loss"] = inner_losses[0]
    return loss, metrics


TASK_BATCHINGS = ("auto", "vmap", "scan")


def resolve_task_batching(task_batching: str | int) -> str | int:
    """How a task batch is mapped over: ``"vmap"``, ``"scan"`` or a chunk size ``n >= 1``.

    ``"vmap"`` runs every task at once; ``"scan"`` runs one task per ``lax.scan`` iteration
    (a gradient is accumulated in the carry, so only one task's activations are alive); an
    int ``n`` scans over chunks of ``n`` tasks, vmapped inside a chunk. All give the same
    result up to float rounding. ``"auto"`` is ``"scan"`` on a single CPU device, where
    one task's working set stays in cache and ``benchmarks/maml_orders.py`` measured the
    Conv-4 meta-step 1.5x-2x faster than ``vmap`` (with ~30x less XLA temporary memory),
    and ``"vmap"`` elsewhere: on accelerators, and on several devices, where the task axis
    is what ``jit`` shards (a scanned axis cannot be split over devices).
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


def _chunk_size(task_batching: str | int) -> int | None:
    """``None`` for vmap, else the number of tasks per scan iteration."""
    mode = resolve_task_batching(task_batching)
    return None if mode == "vmap" else 1 if mode == "scan" else mode


def _num_tasks(episodes: chex.ArrayTree) -> int:
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
        return _num_tasks(episodes)
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
    chunk = _chunk_size(task_batching)
    if chunk is None:
        return jax.vmap(fn, in_axes=(None, 0))(params, episodes)
    return jax.lax.map(
        lambda episode: fn(params, episode), episodes, batch_size=chunk if chunk > 1 else None
    )


def mean_over_tasks(
    per_task: Callable, params: Params, episodes: Episode, task_batching: str | int = "auto"
) -> tuple[chex.Array, dict]:
    """Lifts ``per_task(params, episode) -> (loss, metrics)`` to a task batch.

    Returns the mean loss and mean metrics over the leading task axis of ``episodes``
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
    chunk = _chunk_size(task_batching)
    if chunk is None:
        (_, metrics), grads = jax.value_and_grad(
            functools.partial(mean_over_tasks, per_task, task_batching="vmap"), has_aux=True
        )(params, episodes)
        return grads, metrics
    num_tasks = _num_tasks(episodes)
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


def meta_loss(
    params: Params,
    episodes: Episode,
    *,
    loss_fn: LossFn,
    inner_lr: float | Params,
    num_steps: int,
    first_order: bool = False,
    remat: bool = False,
    unroll: int | bool = 1,
    task_batching: str | int = "auto",
    meta_gradient: str | meta_gradients.MetaGradient = "exact",
    meta_step: chex.Array | None = None,
) -> tuple[chex.Array, dict]:
    """Mean query loss over a task batch (leading axis of every ``episodes`` leaf).

    ``episodes`` leaves are ``[tasks, ways * shots, ...]`` (support) and
    ``[tasks, ways * queries, ...]`` (query); returns the scalar mean loss and the metrics
    of :func:`task_loss` averaged over tasks. ``task_batching``: see
    :func:`resolve_task_batching`.
    """
    per_task = functools.partial(
        task_loss,
        loss_fn=loss_fn,
        inner_lr=inner_lr,
        num_steps=num_steps,
        first_order=first_order,
        remat=remat,
        unroll=unroll,
        meta_gradient=meta_gradient,
        meta_step=meta_step,
    )
    return mean_over_tasks(per_task, params, episodes, task_batching)


def meta_grad(
    params: Params, episodes: Episode, *, task_batching: str | int = "auto", **kwargs
) -> tuple[Params, dict]:
    """Gradient of :func:`meta_loss` w.r.t. the meta-parameters, and the batch metrics.

    ``kwargs`` are :func:`task_loss`'s settings (``loss_fn``, ``inner_lr``, ``num_steps``,
    ``meta_gradient``, ``meta_step``, ...); ``task_batching``: see :func:`resolve_task_batching`.
    """
    per_task = functools.partial(task_loss, **kwargs)
    return grad_over_tasks(per_task, params, episodes, task_batching)


class MetaStep(NamedTuple):
    """Static settings of a MAML meta-step (hashable, so usable as a static argument)."""

    loss_fn: LossFn
    optimizer: optax.GradientTransformation
    inner_lr: float
    num_steps: int
    first_order: bool = False
    remat: bool = False
    unroll: int | bool = 1
    task_batching: str | int = "auto"
    meta_gradient: str | meta_gradients.MetaGradient = "exact"

    def grad(
        self, params: Params, episodes: Episode, meta_step: chex.Array | None = None
    ) -> tuple[Params, dict]:
        """Meta-gradient and metrics for a task batch (``meta_step``: for annealing)."""
        return meta_grad(
            params,
            episodes,
            loss_fn=self.loss_fn,
            inner_lr=self.inner_lr,
            num_steps=self.num_steps,
            first_order=self.first_order,
            remat=self.remat,
            unroll=self.unroll,
            task_batching=self.task_batching,
            **_meta_gradient_kwargs(self.meta_gradient, meta_step),
        )

    def apply(self, params: Params, opt_state: optax.OptState, grads: Params):
        """One optimizer update; returns ``(params, opt_state)``."""
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def __call__(
        self,
        params: Params,
        opt_state: optax.OptState,
        episodes: Episode,
        meta_step: chex.Array | None = None,
    ):
        """One meta-step: ``-> (params, opt_state, metrics)``."""
        grads, metrics = self.grad(params, episodes, meta_step)
        params, opt_state = self.apply(params, opt_state, grads)
        return params, opt_state, metrics


def make_meta_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    inner_lr: float,
    num_steps: int,
    first_order: bool = False,
    remat: bool = False,
    unroll: int | bool = 1,
    task_batching: str | int = "auto",
    jit: bool = True,
    donate: bool = True,
    skip_nonfinite: bool = False,
    meta_gradient: str | meta_gradients.MetaGradient = "exact",
):
    """Builds ``step(params, opt_state, episodes) -> (params, opt_state, metrics)``.

    The whole meta-step (map over tasks by ``task_batching``, inner scan, outer gradient,
    optimizer update) is one ``jax.jit`` when ``jit`` is true.

    Args:
      loss_fn, optimizer, inner_lr, num_steps, first_order, remat, unroll, task_batching:
        the meta-step's settings (see :func:`adapt` and :func:`resolve_task_batching`).
      jit: compile the step with ``jax.jit``.
      donate: with ``jit``, donate ``params`` and ``opt_state`` (their buffers are reused for
        the outputs, saving a copy of each): the arrays passed in are deleted by the call, so
        keep only the returned ones. If a step can go wrong (NaN/inf in the inputs, an
        untested loss) and the input parameters must survive it, pass ``donate=False`` or
        ``skip_nonfinite=True``.
      skip_nonfinite: when the meta-gradient or ``metrics["loss"]`` is not finite, return the
        input ``params`` and ``opt_state`` unchanged (the update is skipped, as the trainer's
        ``nan_policy="skip"``) and set ``metrics["finite"]`` to ``False``; costs one
        reduction over the gradient. Safe with ``donate``: the last good parameters are
        what the step returns.
      meta_gradient: see :func:`adapt`; with ``first_order_until > 0`` the step takes a
        fourth argument, the meta-step index.
    """
    _check_settings(inner_lr=inner_lr, num_steps=num_steps)
    resolve_task_batching(task_batching)  # validates before tracing
    if not _is_legacy(meta_gradient):
        meta_gradient = meta_gradients.meta_gradient_spec(meta_gradient, first_order=first_order)
        meta_gradients.check_num_steps(meta_gradient, num_steps)
    settings = MetaStep(
        loss_fn, optimizer, inner_lr, num_steps, first_order, remat, unroll, task_batching,
        meta_gradient,
    )  # fmt: skip
    step = guarded_meta_step(settings) if skip_nonfinite else settings.__call__
    if not jit:
        return step
    return jax.jit(step, donate_argnums=(0, 1) if donate else ())


def keep_if_finite(
    params: Params,
    opt_state: optax.OptState,
    new_params: Params,
    new_opt_state: optax.OptState,
    grads: Params,
    metrics: dict,
) -> tuple[Params, optax.OptState, dict]:
    """The new ``(params, opt_state)`` if ``grads`` and ``metrics["loss"]`` are finite, else
    the old ones.

    Returns ``(params, opt_state, metrics)`` with ``metrics["finite"]`` a scalar bool.
    """
    checked = (grads, metrics["loss"]) if "loss" in metrics else grads
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(checked)]))

    def pick(new, old):
        return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)

    metrics = {**metrics, "finite": finite}
    return pick(new_params, params), pick(new_opt_state, opt_state), metrics


def guarded_meta_step(settings: MetaStep, axis_name: str | None = None) -> Callable:
    """``settings``' meta-step that skips a non-finite update (:func:`keep_if_finite`).

    With ``axis_name`` (inside ``pmap``) the gradient and metrics are averaged over that
    axis first, so every device makes the same decision.
    """

    def step(params, opt_state, episodes, meta_step=None):
        grads, metrics = settings.grad(params, episodes, meta_step)
        if axis_name is not None:
            grads, metrics = jax.lax.pmean((grads, metrics), axis_name)
        new_params, new_opt_state = settings.apply(params, opt_state, grads)
        return keep_if_finite(params, opt_state, new_params, new_opt_state, grads, metrics)

    return step


def _is_legacy(meta_gradient) -> bool:
    """``"exact"`` by name: the ``first_order`` flag alone decides (the original path)."""
    return isinstance(meta_gradient, str) and meta_gradient == "exact"


def _meta_gradient_kwargs(meta_gradient, meta_step) -> dict:
    if _is_legacy(meta_gradient) and meta_step is None:
        return {}
    return {"meta_gradient": meta_gradient, "meta_step": meta_step}


def _check_settings(*, inner_lr, num_steps, signed: bool = False) -> None:
    """Static settings, checked before tracing (a traced ``inner_lr`` is not inspected).

    ``signed=True`` accepts negative per-parameter rates (Meta-SGD's learned ones).
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 0:
        raise ValueError(f"num_steps must be an int >= 0; got {num_steps!r}")
    is_leaf = jax.tree_util.all_leaves([inner_lr]) or not jax.tree.leaves(inner_lr)
    if is_leaf and not (is_real_number(inner_lr) or _is_numeric_array(inner_lr)):
        raise TypeError(
            "inner_lr must be a number > 0 or a pytree of per-parameter rates shaped like "
            f"params; got {inner_lr!r} ({type(inner_lr).__name__})"
        )
    if not _is_scalar(inner_lr):
        _check_rate_values(inner_lr, signed=signed)
    elif is_concrete(inner_lr):
        if not np.isfinite(float(inner_lr)):
            raise ValueError(f"inner_lr must be finite; got {inner_lr!r}")
        if not float(inner_lr) > 0:
            raise ValueError(f"inner_lr must be > 0; got {inner_lr!r}")


def _check_support(inputs: chex.ArrayTree, labels: chex.Array) -> None:
    """One label per support example: every leaf of ``inputs`` is ``[len(labels), ...]``."""
    label_shape = jnp.shape(labels)
    if len(label_shape) < 1:
        raise ValueError(f"labels has shape {label_shape}; expected [support_size]")
    for path, leaf in jax.tree_util.tree_leaves_with_path(inputs):
        if jnp.shape(leaf)[:1] != label_shape[:1]:
            raise ValueError(
                f"inputs leaf {jax.tree_util.keystr(path) or '<root>'} has shape "
                f"{jnp.shape(leaf)} but labels has shape {label_shape}; expected "
                f"[{label_shape[0]}, ...]: one label per support example"
            )
