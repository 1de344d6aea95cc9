"""MAML on regression tasks (the MMAML protocol's baseline): the inner loop on a squared error.

The model maps ``[n, 1]`` inputs to ``[n, 1]`` predictions; episodes carry float targets
as labels (:mod:`mmjax.data.regression`). The meta-gradient is :func:`mmjax.meta.maml.meta_grad`
with :func:`mmjax.meta.common.regression_loss`; evaluation reports the query ``loss`` and
``mse`` after adaptation, per task. Registered as ``"maml_regression"``; MMAML's
regression variant is ``make_learner("mmaml", model, loss="mse")``.
"""

from __future__ import annotations

import functools

import flax.linen as nn

from mmjax.meta import common, maml, task_batching as batching
from mmjax.meta.learner import MetaLearner, register


def maml_regression_learner(
    model: nn.Module,
    *,
    inner_lr: float,
    num_inner_steps: int,
    eval_num_inner_steps: int | None = None,
    first_order: bool = False,
    task_batching: str | int = "auto",
) -> MetaLearner:
    """MAML with the MSE loss (metrics ``loss`` and ``mse``) on a regression ``model``.

    Args:
      model: ``apply(params, inputs: [n, 1]) -> [n, 1]`` predictions.
      inner_lr: inner SGD step size.
      num_inner_steps: inner steps during meta-training.
      eval_num_inner_steps: inner steps at evaluation (default ``num_inner_steps``).
      first_order: stop gradients through the inner gradients.
      task_batching: how the meta-gradient maps the task batch
        (:func:`mmjax.meta.task_batching.resolve_task_batching`); evaluation vmaps it.
    """
    eval_steps = common.check_learner_settings(
        inner_lr=inner_lr, num_inner_steps=num_inner_steps,
        eval_num_inner_steps=eval_num_inner_steps, task_batching=task_batching,
    )  # fmt: skip
    inner = {"loss_fn": common.regression_loss(model.apply), "inner_lr": inner_lr}
    per_task = functools.partial(maml.task_loss, num_steps=eval_steps, **inner)
    return MetaLearner(
        name="maml",
        init=model.init,
        meta_grad=functools.partial(
            maml.meta_grad, num_steps=num_inner_steps, first_order=first_order,
            task_batching=task_batching, **inner,
        ),  # fmt: skip
        evaluate=functools.partial(batching.metrics_per_task, per_task, task_batching="vmap"),
    )


register("maml_regression", maml_regression_learner)
