"""Pieces every learner of :mod:`mmjax.meta` shares: losses, settings checks, the inner SGD step.

A *loss function* is ``loss_fn(params, inputs, labels) -> (loss, metrics)`` with a scalar
``loss`` and a dict of scalar ``metrics``; :func:`classification_loss` and
:func:`regression_loss` build one from a Flax ``apply``. :func:`check_learner_settings` is
the prologue of every gradient-based learner's builder; :func:`adapt_and_score` is its
per-task body (adapt on the support set, then the query loss and metrics), and
:func:`loss_gradient_learner` lifts per-task losses to a learner.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, TypedDict

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.errors import ScopeParamShapeError

from mmjax.data.episodes import Episode
from mmjax.meta.learner import MetaLearner
from mmjax.meta.task_batching import grad_over_tasks, metrics_per_task, resolve_task_batching
from mmjax.validation import check_labels, is_concrete, is_real_number

Params = Any
LossFn = Callable[[Params, chex.ArrayTree, chex.Array], tuple[chex.Array, dict]]
AdaptFn = Callable[[Params, chex.ArrayTree, chex.Array], tuple[Params, chex.Array]]


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
    ``make_step(skip_nonfinite=True)`` or the trainer's ``nan_policy`` catches it.
    To check a data pipeline, call :func:`mmjax.meta.maml.meta_loss` once outside ``jit``
    (:func:`mmjax.meta.task_batching.check_episodes` then reads the labels).
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
                f"task; a task axis belongs outside, see mmjax.meta.task_batching): {error}"
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


def regression_loss(apply_fn: Callable[[Params, chex.ArrayTree], chex.Array]) -> LossFn:
    """Mean squared error loss ``(params, inputs, targets: [n]) -> (loss, {"loss", "mse"})``.

    ``apply_fn(params, inputs)`` returns ``[n, 1]`` (or ``[n]``) predictions.
    """

    def loss_fn(params: Params, inputs: chex.ArrayTree, targets: chex.Array):
        predictions = apply_fn(params, inputs).reshape(targets.shape)
        mse = jnp.mean((predictions - targets) ** 2)
        return mse, {"loss": mse, "mse": mse}

    return loss_fn


def check_inner_lr(inner_lr: float | Params, params: Params, *, signed: bool = False) -> None:
    """Checks a per-parameter learning-rate pytree against ``params`` (Meta-SGD style).

    A scalar is always accepted here (:func:`check_settings` checks its value). A pytree must have the
    structure of ``params``, each leaf of shape ``()`` or that of its parameter, and (when
    concrete) entries that are finite and ``> 0``; ``signed=True`` allows negative entries
    (Meta-SGD's meta-learned rates, which also learn the update's direction).

    Raises:
      ValueError: naming the first leaf whose path, shape or values are wrong.
      TypeError: a leaf that is not a number or a numeric array.
    """
    if is_scalar(inner_lr):
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
    check_rate_values(inner_lr, signed=signed)


def check_rate_values(inner_lr: Params, *, signed: bool) -> None:
    """Every concrete leaf of a rate pytree is a finite number (and ``> 0`` unless signed)."""
    for path, rate in jax.tree_util.tree_leaves_with_path(inner_lr):
        name = jax.tree_util.keystr(path)
        if not (is_real_number(rate) or is_numeric_array(rate)):
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


def is_numeric_array(x: Any) -> bool:
    """Whether ``x`` is an array of a float or integer dtype."""
    dtype = getattr(x, "dtype", None)
    return dtype is not None and (
        jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
    )


def is_scalar(x: Any) -> bool:
    """Whether ``x`` is one rate for every parameter (not a pytree of per-parameter rates)."""
    return not isinstance(x, (dict, list, tuple)) and jnp.ndim(x) == 0


def sgd_update(params: Params, grads: Params, inner_lr: float | Params) -> Params:
    """``params - inner_lr * grads`` leafwise; ``inner_lr`` a scalar or a pytree like ``params``."""
    if is_scalar(inner_lr):
        return jax.tree.map(lambda p, g: p - inner_lr * g, params, grads)
    return jax.tree.map(lambda p, g, lr: p - lr * g, params, grads, inner_lr)


def check_settings(*, inner_lr: float | Params, num_steps: int, signed: bool = False) -> None:
    """Static settings, checked before tracing (a traced ``inner_lr`` is not inspected).

    ``signed=True`` accepts negative per-parameter rates (Meta-SGD's learned ones).
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 0:
        raise ValueError(f"num_steps must be an int >= 0; got {num_steps!r}")
    is_leaf = jax.tree_util.all_leaves([inner_lr]) or not jax.tree.leaves(inner_lr)
    if is_leaf and not (is_real_number(inner_lr) or is_numeric_array(inner_lr)):
        raise TypeError(
            "inner_lr must be a number > 0 or a pytree of per-parameter rates shaped like "
            f"params; got {inner_lr!r} ({type(inner_lr).__name__})"
        )
    if not is_scalar(inner_lr):
        check_rate_values(inner_lr, signed=signed)
    elif is_concrete(inner_lr):
        if not np.isfinite(float(inner_lr)):
            raise ValueError(f"inner_lr must be finite; got {inner_lr!r}")
        if not float(inner_lr) > 0:
            raise ValueError(f"inner_lr must be > 0; got {inner_lr!r}")


def check_support(inputs: chex.ArrayTree, labels: chex.Array) -> None:
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


class SGDLoop(NamedTuple):
    """Static settings of an inner SGD loop (hashable; see :func:`mmjax.meta.maml.adapt`).

    Attributes:
      loss_fn: the loss descended, ``(params, inputs, labels) -> (loss, metrics)``.
      inner_lr: step size: a scalar, or a pytree of per-parameter rates like ``params``.
      num_steps: number of steps.
      first_order: stop the gradient through the inner gradients.
      remat: rematerialise each step in the backward pass (``jax.checkpoint``).
      unroll: ``lax.scan`` unroll factor (``True``: fully unrolled).
    """

    loss_fn: LossFn
    inner_lr: float | Params
    num_steps: int
    first_order: bool = False
    remat: bool = False
    unroll: int | bool = 1


def sgd_steps(
    loop: SGDLoop, params: Params, inputs: chex.ArrayTree, labels: chex.Array
) -> tuple[Params, chex.Array]:
    """``loop.num_steps`` of SGD on ``loop.loss_fn`` by ``lax.scan`` (settings unchecked).

    ``inputs`` leaves ``[support_size, ...]``, ``labels: [support_size]``. Returns
    ``(adapted_params, losses)``, ``losses: [num_steps]`` the loss before each step;
    ``num_steps=0`` returns ``params`` unchanged and ``losses`` of shape ``[0]``.
    """

    def step(current, _):
        (loss, _), grads = jax.value_and_grad(loop.loss_fn, has_aux=True)(current, inputs, labels)
        if loop.first_order:
            grads = jax.lax.stop_gradient(grads)
        return sgd_update(current, grads, loop.inner_lr), loss

    if loop.remat:
        step = jax.checkpoint(step)
    unroll = loop.num_steps if loop.unroll is True else int(loop.unroll)
    return jax.lax.scan(step, params, None, length=loop.num_steps, unroll=max(unroll, 1))


class InnerLoopSettings(TypedDict, total=False):
    """The settings every gradient-based learner's builder takes (``**settings``).

    Attributes:
      inner_lr: inner step size ``> 0``: a number, or (where the learner allows it) a pytree
        of per-parameter rates shaped like the model's parameters.
      num_inner_steps: inner steps during meta-training, an int ``>= 0``.
      eval_num_inner_steps: inner steps at evaluation (default ``num_inner_steps``).
      first_order: stop the gradient through the inner gradients (default ``False``; not
        a setting of Reptile, which is first order).
      task_batching: how the task batch is mapped (default ``"auto"``;
        :func:`mmjax.meta.task_batching.resolve_task_batching`).
    """

    inner_lr: float | Params
    num_inner_steps: int
    eval_num_inner_steps: int | None
    first_order: bool
    task_batching: str | int


class InnerLoop(NamedTuple):
    """Checked :class:`InnerLoopSettings`, ``eval_num_inner_steps`` resolved to an int."""

    inner_lr: float | Params
    num_inner_steps: int
    eval_num_inner_steps: int
    first_order: bool
    task_batching: str | int


def check_learner_settings(
    settings: InnerLoopSettings, *, defaults: InnerLoopSettings | None = None,
    first_order: bool = True,
) -> InnerLoop:  # fmt: skip
    """The prologue of a gradient-based learner's builder: its checked inner-loop settings.

    Args:
      settings: the builder's ``**settings`` (:class:`InnerLoopSettings`).
      defaults: the learner's own defaults for missing keys (e.g. Meta-SGD's ``inner_lr``);
        ``inner_lr`` and ``num_inner_steps`` are required unless given here.
      first_order: whether ``first_order`` is a setting of this learner.

    Checks, before anything is traced: the names, ``inner_lr`` and ``num_inner_steps``
    (:func:`check_settings`), ``eval_num_inner_steps`` and ``task_batching``
    (:func:`mmjax.meta.task_batching.resolve_task_batching`).

    Raises:
      TypeError: an unknown or missing setting (naming it and the valid ones), or an
        ``inner_lr`` that is not a number.
      ValueError: a setting out of range, naming it and its range.
    """
    valid = [name for name in InnerLoop._fields if first_order or name != "first_order"]
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        raise TypeError(f"unknown setting(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    given = {"eval_num_inner_steps": None, "first_order": False, "task_batching": "auto"}
    given.update(defaults or {}, **settings)
    missing = [name for name in ("inner_lr", "num_inner_steps") if name not in given]
    if missing:
        raise TypeError(f"missing required setting(s) {', '.join(missing)}")
    check_settings(inner_lr=given["inner_lr"], num_steps=given["num_inner_steps"])
    if given["eval_num_inner_steps"] is None:
        given["eval_num_inner_steps"] = given["num_inner_steps"]
    try:
        check_settings(inner_lr=given["inner_lr"], num_steps=given["eval_num_inner_steps"])
    except ValueError as error:
        raise ValueError(f"eval_num_inner_steps: {error}") from None
    resolve_task_batching(given["task_batching"])
    return InnerLoop(**given)


class Scored(NamedTuple):
    """One task after :func:`adapt_and_score`: query ``loss`` (scalar), ``metrics``, ``adapted``."""

    loss: chex.Array
    metrics: dict
    adapted: Params


def adapt_and_score(adapt: AdaptFn, score: LossFn, params: Params, episode: Episode) -> Scored:
    """Adapts ``params`` on ``episode``'s support set, then scores its query set.

    Args:
      adapt: ``(params, support_inputs, support_labels) -> (adapted, support_losses)``,
        ``support_losses: [num_steps]`` (the loss before each inner step).
      score: a loss function, applied to ``(adapted, query_inputs, query_labels)``.
      params: the parameters adapted.
      episode: one task (support leaves ``[support_size, ...]``, query ``[query_size, ...]``).

    Returns:
      :class:`Scored`; ``metrics`` are ``score``'s plus ``support_loss`` (the support loss
      before adaptation) when there was at least one inner step. With ``num_steps=0``
      nothing is adapted (``adapted`` is ``params``) and there is no ``support_loss``.
    """
    adapted, support_losses = adapt(params, episode.support_inputs, episode.support_labels)
    loss, metrics = score(adapted, episode.query_inputs, episode.query_labels)
    metrics = dict(metrics)
    if jnp.shape(support_losses)[0] > 0:
        metrics["support_loss"] = support_losses[0]
    return Scored(loss, metrics, adapted)


def loss_gradient_learner(
    name: str,
    init: Callable[[chex.PRNGKey, chex.ArrayTree], Params],
    *,
    train_task: Callable[[Params, Episode], tuple[chex.Array, dict]],
    eval_task: Callable[[Params, Episode], tuple[chex.Array, dict]],
    task_batching: str | int = "auto",
    eval_task_batching: str | int | None = None,
    **fields,
) -> MetaLearner:
    """A learner whose meta-gradient is the gradient of the mean per-task loss.

    ``meta_grad`` is :func:`~mmjax.meta.task_batching.grad_over_tasks` of ``train_task``
    and ``evaluate`` is :func:`~mmjax.meta.task_batching.metrics_per_task` of
    ``eval_task``, both ``(meta_params, episode) -> (loss, metrics)`` of one task, mapped
    by ``task_batching`` (``eval_task_batching`` for evaluation, default the same).
    ``fields``: the other :class:`~mmjax.meta.learner.MetaLearner` fields.
    """
    eval_batching = task_batching if eval_task_batching is None else eval_task_batching
    return MetaLearner(
        name=name,
        init=init,
        meta_grad=functools.partial(grad_over_tasks, train_task, task_batching=task_batching),
        evaluate=functools.partial(metrics_per_task, eval_task, task_batching=eval_batching),
        **fields,
    )
