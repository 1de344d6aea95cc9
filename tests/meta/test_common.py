"""The shared pieces of mmjax.meta.common: the learner prologue and adapt -> query score."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.data.episodes import Episode
from mmjax.meta import common, make_learner
from mmjax.nn.classifier import Classifier
from mmjax.nn.mlp import MLP


def test_prologue_returns_the_checked_settings_with_defaults():
    inner = common.check_learner_settings({"inner_lr": 0.4, "num_inner_steps": 3})
    assert inner == common.InnerLoop(0.4, 3, 3, False, "auto")
    inner = common.check_learner_settings(
        {"num_inner_steps": 3, "eval_num_inner_steps": 7, "first_order": True},
        defaults={"inner_lr": 0.1, "num_inner_steps": 1},
    )
    assert inner == common.InnerLoop(0.1, 3, 7, True, "auto")


@pytest.mark.parametrize(
    "settings, error, message",
    [
        (dict(inner_lr=0.0, num_inner_steps=1), ValueError, r"inner_lr must be > 0; got 0.0"),
        (dict(inner_lr=float("nan"), num_inner_steps=1), ValueError, "inner_lr must be finite"),
        (dict(inner_lr="0.4", num_inner_steps=1), TypeError, r"inner_lr must be a number > 0"),
        (
            dict(inner_lr=0.4, num_inner_steps=-1),
            ValueError,
            r"num_steps must be an int >= 0; got -1",
        ),
        (dict(inner_lr=0.4, num_inner_steps=True), ValueError, r"num_steps must be an int >= 0"),
        (
            dict(inner_lr=0.4, num_inner_steps=1, eval_num_inner_steps=2.5),
            ValueError,
            r"^eval_num_inner_steps: num_steps must be an int >= 0; got 2.5$",
        ),
        (
            dict(inner_lr=0.4, num_inner_steps=1, task_batching="loop"),
            ValueError,
            r"task_batching must be one of \('auto', 'vmap', 'scan'\) or an int >= 1; got 'loop'",
        ),
        (
            dict(inner_lr=0.4, num_inner_steps=1, task_batching=0),
            ValueError,
            r"task_batching as a chunk size must be an int >= 1; got 0",
        ),
        (
            dict(inner_lr=0.4, num_inner_steps=1, inner_steps=2),
            TypeError,
            r"^unknown setting\(s\) inner_steps; valid: inner_lr, num_inner_steps, "
            r"eval_num_inner_steps, first_order, task_batching$",
        ),
        (dict(inner_lr=0.4), TypeError, r"^missing required setting\(s\) num_inner_steps$"),
    ],
)
def test_prologue_rejects_bad_settings_with_a_clear_message(settings, error, message):
    with pytest.raises(error, match=message):
        common.check_learner_settings(settings)


def test_prologue_of_a_learner_without_first_order_refuses_it():
    with pytest.raises(TypeError, match=r"unknown setting\(s\) first_order; valid: inner_lr, "):
        common.check_learner_settings(
            {"inner_lr": 0.4, "num_inner_steps": 1, "first_order": True}, first_order=False
        )


@pytest.mark.parametrize("name", ["maml", "anil", "metasgd", "reptile", "mmaml"])
def test_every_gradient_based_learner_runs_the_prologue(name):
    model = Classifier(MLP((4,)), num_classes=2)
    with pytest.raises(ValueError, match=r"^eval_num_inner_steps: num_steps must be an int >= 0"):
        make_learner(name, model, inner_lr=0.1, num_inner_steps=1, eval_num_inner_steps=-2)
    with pytest.raises(TypeError, match=r"^unknown setting\(s\) inner_step;"):
        make_learner(name, model, inner_lr=0.1, num_inner_steps=1, inner_step=2)


def _episode():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)
    y = jnp.asarray([0, 1, 0, 1])
    return Episode(x, y, 2 * x, y)


def test_adapt_and_score_adapts_on_support_and_scores_the_query():
    """A linear 'model' w -> (x @ w): the adapted w is the support step, the score the query."""
    episode = _episode()
    loss_fn = common.classification_loss(lambda w, x: x @ w)
    w = jnp.zeros((3, 2))
    adapt = functools.partial(common.sgd_steps, common.SGDLoop(loss_fn, 0.5, 1))
    scored = common.adapt_and_score(adapt, loss_fn, w, episode)
    grads = jax.grad(lambda p: loss_fn(p, episode.support_inputs, episode.support_labels)[0])(w)
    np.testing.assert_array_equal(scored.adapted, w - 0.5 * grads)
    want_loss, want_metrics = loss_fn(w - 0.5 * grads, episode.query_inputs, episode.query_labels)
    assert scored.loss == want_loss and scored.metrics["accuracy"] == want_metrics["accuracy"]
    np.testing.assert_allclose(scored.metrics["support_loss"], np.log(2), rtol=1e-6)  # w = 0


def test_adapt_and_score_with_no_inner_step_has_no_support_loss():
    episode = _episode()
    loss_fn = common.classification_loss(lambda w, x: x @ w)
    w = jnp.ones((3, 2))
    adapt = functools.partial(common.sgd_steps, common.SGDLoop(loss_fn, 0.5, 0))
    scored = common.adapt_and_score(adapt, loss_fn, w, episode)
    np.testing.assert_array_equal(scored.adapted, w)
    assert set(scored.metrics) == {"loss", "accuracy"}
    assert scored.loss == loss_fn(w, episode.query_inputs, episode.query_labels)[0]
