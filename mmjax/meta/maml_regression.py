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
from typing_extensions import Unpack

from mmjax.meta import common, maml
from mmjax.meta.learner import MetaLearner, register


def maml_regression_learner(
    model: nn.Module, **settings: Unpack[common.InnerLoopSettings]
) -> MetaLearner:
    """MAML with the MSE loss (metrics ``loss`` and ``mse``) on a regression ``model``.

    ``model``: ``apply(params, inputs: [n, 1]) -> [n, 1]`` predictions; ``settings``:
    :class:`~mmjax.meta.common.InnerLoopSettings` (``task_batching`` maps the
    meta-gradient's task batch; evaluation vmaps it).
    """
    inner = common.check_learner_settings(settings)
    loop = {"loss_fn": common.regression_loss(model.apply), "inner_lr": inner.inner_lr}
    train_task = functools.partial(
        maml.task_loss, num_steps=inner.num_inner_steps, first_order=inner.first_order, **loop
    )
    return common.loss_gradient_learner(
        "maml",
        model.init,
        train_task=train_task,
        eval_task=functools.partial(maml.task_loss, num_steps=inner.eval_num_inner_steps, **loop),
        task_batching=inner.task_batching,
        eval_task_batching="vmap",
    )


register("maml_regression", maml_regression_learner)
