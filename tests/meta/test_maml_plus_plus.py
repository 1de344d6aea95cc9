"""MAML++ pieces: each reduces to plain MAML at its neutral setting, and is learned otherwise."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.meta import make_learner, maml
from mmjax.meta import maml_plus_plus as mpp
from mmjax.meta.meta_gradients import MetaGradient
from mmjax.nn import MLP
from tests.meta.test_meta_gradients import WAYS, _grad, _mlp_setup, _rel_error, _task

STEPS = 3


def _mpp_grad(loss_fn, meta_params, episode, **settings):
    loss = lambda p: mpp.multi_step_task_loss(
        p, episode, loss_fn=loss_fn, num_steps=STEPS, **settings
    )[0]
    return jax.grad(loss)(meta_params)


def test_lslr_with_equal_rates_is_plain_maml_and_its_rates_get_a_gradient():
    with jax.enable_x64(True):
        loss_fn, params, episodes = _mlp_setup(tasks=1)
        episode = _task(episodes, 0)
        rates = mpp.init_lslr(params, num_steps=STEPS, inner_lr=0.4)
        chex.assert_shape(jax.tree.leaves(rates), (STEPS,))
        meta = {"model": params, "inner_lr": rates}
        grads = jax.jit(lambda m: _mpp_grad(loss_fn, m, episode, lslr=True))(meta)
        plain = jax.jit(lambda p: _grad(loss_fn, p, episode, inner_lr=0.4, num_steps=STEPS))(params)
        chex.assert_trees_all_close(grads["model"], plain, rtol=1e-10, atol=1e-13)
        assert all(float(jnp.abs(g).max()) > 1e-6 for g in jax.tree.leaves(grads["inner_lr"]))
        loss = jax.jit(
            lambda m: mpp.multi_step_task_loss(
                m, episode, loss_fn=loss_fn, num_steps=STEPS, lslr=True
            )[0]
        )(meta)
        plain_loss = jax.jit(
            lambda p: maml.task_loss(p, episode, loss_fn=loss_fn, inner_lr=0.4, num_steps=STEPS)[0]
        )(params)
        np.testing.assert_allclose(loss, plain_loss, rtol=1e-12)
        with pytest.raises(ValueError, match=r"expected \(3,\): one rate per inner step"):
            mpp.multi_step_task_loss(
                {"model": params, "inner_lr": mpp.init_lslr(params, num_steps=2, inner_lr=0.4)},
                episode, loss_fn=loss_fn, num_steps=STEPS, lslr=True,
            )  # fmt: skip


def test_multi_step_loss_on_the_last_step_only_is_plain_maml():
    with jax.enable_x64(True):
        loss_fn, params, episodes = _mlp_setup(tasks=1)
        episode = _task(episodes, 0)
        grad = jax.jit(
            lambda p, w: _mpp_grad(loss_fn, p, episode, lslr=False, inner_lr=0.4, step_weights=w)
        )
        plain = jax.jit(lambda p: _grad(loss_fn, p, episode, inner_lr=0.4, num_steps=STEPS))(params)
        last = jnp.asarray([0.0, 0.0, 1.0])
        chex.assert_trees_all_close(grad(params, last), plain, rtol=1e-10, atol=1e-13)
        uniform = grad(params, jnp.full((STEPS,), 1 / STEPS))
        assert _rel_error(uniform, plain) > 1e-3
        # The weighted loss is the weighted sum of the query losses after each step.
        losses = jax.jit(lambda p: [
            maml.task_loss(p, episode, loss_fn=loss_fn, inner_lr=0.4, num_steps=k)[0]
            for k in range(1, STEPS + 1)
        ])(params)  # fmt: skip
        weighted = lambda p: mpp.multi_step_task_loss(p, episode, loss_fn=loss_fn, inner_lr=0.4,
                                           num_steps=STEPS, lslr=False,
                                           step_weights=jnp.asarray([0.2, 0.3, 0.5]))[0]  # fmt: skip
        loss = jax.jit(weighted)(params)
        np.testing.assert_allclose(loss, np.dot([0.2, 0.3, 0.5], losses), rtol=1e-12)


def test_multi_step_weights_anneal_from_uniform_towards_the_last_step():
    weights = lambda s: np.asarray(mpp.multi_step_weights(s, num_steps=5, anneal_steps=100))
    np.testing.assert_allclose(weights(0), np.full(5, 0.2), rtol=1e-6)
    for step in (0, 10, 50, 100, 1000):
        np.testing.assert_allclose(weights(step).sum(), 1.0, rtol=1e-6)
    assert weights(10)[-1] < weights(50)[-1] < weights(100)[-1]
    np.testing.assert_allclose(weights(1000)[:-1], 0.03 / 5, rtol=1e-6)
    np.testing.assert_array_equal(mpp.multi_step_weights(7, num_steps=3, anneal_steps=0), [0, 0, 1])


@pytest.mark.parametrize("meta_gradient", [MetaGradient("truncated", truncate=1)])
def test_mamlpp_learner_under_every_task_batching_equals_a_per_task_loop(meta_gradient):
    with jax.enable_x64(True):
        _, params, episodes = _mlp_setup(tasks=3)
        model = MLP(hidden_sizes=(5, WAYS), activation=jnp.tanh)
        kwargs = {"inner_lr": 0.4, "num_inner_steps": STEPS, "multi_step_anneal_steps": 10}
        if isinstance(meta_gradient, MetaGradient):
            kwargs.update(meta_gradient="truncated", truncate=meta_gradient.truncate)
        meta = {"model": params, "inner_lr": mpp.init_lslr(params, num_steps=STEPS, inner_lr=0.4)}
        meta_step = jnp.asarray(4)
        weights = mpp.multi_step_weights(meta_step, num_steps=STEPS, anneal_steps=10)
        loss_fn = maml.classification_loss(model.apply)
        one = jax.jit(lambda m, e: _mpp_grad(loss_fn, m, e, lslr=True, step_weights=weights,
                                             meta_gradient=meta_gradient))  # fmt: skip
        loop = jax.tree.map(
            lambda *g: sum(g) / 3, *(one(meta, _task(episodes, i)) for i in range(3))
        )
        for batching in ("vmap", "scan", 2):
            learner = make_learner("mamlpp", model, task_batching=batching, **kwargs)
            assert learner.takes_meta_step
            grads, _ = jax.jit(functools.partial(learner.meta_grad, meta_step=meta_step))(
                meta, episodes
            )
            chex.assert_trees_all_close(grads, loop, rtol=1e-9, atol=1e-12)
        metrics = jax.jit(learner.evaluate)(meta, episodes)
        chex.assert_shape(metrics["accuracy"], (3,))
