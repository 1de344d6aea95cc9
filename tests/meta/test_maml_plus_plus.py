"""MAML++ pieces: each reduces to plain MAML at its neutral setting, and is learned otherwise."""

import functools
import re

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax.meta import make_learner, make_step, maml
from mmjax.meta import maml_plus_plus as mpp
from mmjax.meta.meta_gradients import MetaGradient
from mmjax.nn import MLP
from mmjax.nn.conv import BatchStatNorm
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
        for batching in ("vmap", "scan"):
            learner = make_learner("mamlpp", model, task_batching=batching, **kwargs)
            assert learner.takes_meta_step
            grads, _ = jax.jit(functools.partial(learner.meta_grad, meta_step=meta_step))(
                meta, episodes
            )
            chex.assert_trees_all_close(grads, loop, rtol=1e-9, atol=1e-12)
        metrics = jax.jit(learner.evaluate)(meta, episodes)
        chex.assert_shape(metrics["accuracy"], (3,))


class _BatchNormNet(nn.Module):
    """Dense -> batch-stat norm + ReLU -> Dense: the smallest model with batch norm."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(WAYS)(BatchStatNorm(relu=True)(nn.Dense(5)(x)))


def _bn_setup(tasks: int = 1):
    """``_mlp_setup``'s episodes with :class:`_BatchNormNet`; BN leaves away from 1 and 0."""
    _, _, episodes = _mlp_setup(tasks=tasks)
    model = _BatchNormNet()
    params = model.init(jax.random.key(1), episodes.support_inputs[0])
    bn = params["params"]["BatchStatNorm_0"]
    keys = jax.random.split(jax.random.key(2))
    bn["scale"] = bn["scale"] + 0.3 * jax.random.normal(keys[0], bn["scale"].shape)
    bn["bias"] = bn["bias"] + 0.3 * jax.random.normal(keys[1], bn["bias"].shape)
    if jax.config.jax_enable_x64:
        params = jax.tree.map(lambda x: x.astype(jnp.float64), params)
    return model, maml.classification_loss(model.apply), params, episodes


def _is_bn(path) -> bool:
    return "BatchStatNorm_0" in jax.tree_util.keystr(path)


def test_equal_per_step_bn_copies_are_maml_with_batch_norm_frozen_in_the_inner_loop():
    with jax.enable_x64(True):
        _, loss_fn, params, episodes = _bn_setup()
        episode = _task(episodes, 0)
        copies = mpp.init_per_step_bn(params, num_steps=STEPS)
        chex.assert_shape(jax.tree.leaves(copies), (STEPS + 1, 5))
        meta = {"model": params, "per_step_bn": copies}
        settings = {"loss_fn": loss_fn, "num_steps": STEPS, "lslr": False, "inner_lr": 0.4}
        loss = lambda m: mpp.multi_step_task_loss(m, episode, per_step_bn=True, **settings)[0]
        value, grads = jax.jit(jax.value_and_grad(loss))(meta)
        # MAML with a zero inner rate on the batch-norm leaves: they stay θ's at every step.
        rates = jax.tree_util.tree_map_with_path(lambda p, _: 0.0 if _is_bn(p) else 0.4, params)
        plain = lambda p: maml.task_loss(
            p, episode, loss_fn=loss_fn, inner_lr=rates, num_steps=STEPS, signed_rates=True
        )[0]
        plain_value, plain_grads = jax.jit(jax.value_and_grad(plain))(params)
        np.testing.assert_allclose(value, plain_value, rtol=1e-12)
        for path, g in jax.tree_util.tree_leaves_with_path(grads["model"]):
            plain_g = plain_grads
            for entry in path:
                plain_g = plain_g[entry.key]
            if _is_bn(path):  # θ's own BN leaves are unused: the copies replace them
                np.testing.assert_array_equal(g, 0.0)
            else:
                np.testing.assert_allclose(g, plain_g, rtol=1e-10, atol=1e-13)
        # Chain rule: θ_BN feeds every step, so its gradient is the sum of the copies'.
        bn_plain = plain_grads["params"]["BatchStatNorm_0"]
        bn_steps = grads["per_step_bn"]["params"]["BatchStatNorm_0"]
        for name in ("scale", "bias"):
            np.testing.assert_allclose(
                bn_steps[name].sum(0), bn_plain[name], rtol=1e-10, atol=1e-13
            )
            assert np.all(np.abs(bn_steps[name]).max(axis=1) > 1e-6)  # every copy is used


def test_per_step_bn_gradient_matches_central_differences_on_one_copy():
    with jax.enable_x64(True):
        _, loss_fn, params, episodes = _bn_setup()
        episode = _task(episodes, 0)
        copies = mpp.init_per_step_bn(params, num_steps=STEPS)
        key = jax.random.key(3)
        copies = jax.tree.map(lambda c: c + 0.2 * jax.random.normal(key, c.shape), copies)
        meta = {"model": params, "per_step_bn": copies,
                "inner_lr": mpp.init_lslr(params, num_steps=STEPS, inner_lr=0.4)}  # fmt: skip
        weights = jnp.asarray([0.2, 0.3, 0.5])
        loss = jax.jit(lambda m: mpp.multi_step_task_loss(
            m, episode, loss_fn=loss_fn, num_steps=STEPS, per_step_bn=True, step_weights=weights
        )[0])  # fmt: skip
        grads = jax.jit(jax.grad(loss))(meta)["per_step_bn"]
        index = 1  # copy 1: the support pass of step 1 and the query after step 0
        direction = jax.tree.map(
            lambda c: jnp.zeros_like(c).at[index].set(jax.random.normal(key, c.shape[1:])), copies
        )
        eps = 1e-5  # central differences: error O(eps^2 * L''') ~ 1e-10, far below the tolerance
        shifted = lambda s: loss(dict(meta, per_step_bn=jax.tree.map(
            lambda c, d: c + s * d, copies, direction)))  # fmt: skip
        numeric = (shifted(eps) - shifted(-eps)) / (2 * eps)
        analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grads),
                                                        jax.tree.leaves(direction)))  # fmt: skip
        assert abs(float(analytic)) > 1e-4
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6)


def test_copy_k_is_used_exactly_with_the_parameters_after_k_inner_steps():
    with jax.enable_x64(True):
        _, loss_fn, params, episodes = _bn_setup()
        episode = _task(episodes, 0)
        copies = mpp.init_per_step_bn(params, num_steps=STEPS)
        run = jax.jit(lambda c: mpp.adapt_per_step(
            params, episode, loss_fn=loss_fn, inner_lr=0.4, num_steps=STEPS, lslr=False,
            query_losses=True, per_step_bn=c,
        ))  # fmt: skip
        adapted, support, query = run(copies)
        # Equal copies: the adapted model carries copy STEPS (θ's own BN leaves here).
        chex.assert_trees_all_equal(adapted["params"]["BatchStatNorm_0"],
                                    params["params"]["BatchStatNorm_0"])  # fmt: skip
        for k in (2, STEPS):  # support pass of step k, query after step k - 1
            bumped = jax.tree.map(lambda c, k=k: c.at[k].add(0.5), copies)
            _, new_support, new_query = run(bumped)
            np.testing.assert_array_equal(new_support[:k], support[:k])
            np.testing.assert_array_equal(new_query[: k - 1], query[: k - 1])
            assert np.all(np.abs(new_support[k:] - support[k:]) > 1e-6)
            assert np.all(np.abs(new_query[k - 1 :] - query[k - 1 :]) > 1e-6)


def test_per_step_bn_learner_under_every_task_batching_and_its_evaluation():
    with jax.enable_x64(True):
        model, loss_fn, params, episodes = _bn_setup(tasks=3)
        kwargs = {"inner_lr": 0.4, "num_inner_steps": STEPS, "multi_step_anneal_steps": 10,
                  "meta_gradient": "truncated", "truncate": 1, "first_order_until": 2,
                  "per_step_bn": True}  # fmt: skip
        meta = make_learner("mamlpp", model, **kwargs).init(
            jax.random.key(0), episodes.support_inputs[0]
        )
        assert sorted(meta) == ["inner_lr", "model", "per_step_bn"]
        meta = jax.tree.map(lambda x: x.astype(jnp.float64), dict(meta, model=params))
        key = jax.random.key(4)  # copies that differ, so a wrong index would show
        meta["per_step_bn"] = jax.tree.map(
            lambda c: c + 0.2 * jax.random.normal(key, c.shape), meta["per_step_bn"]
        )
        meta_step = jnp.asarray(4)
        results = []
        for batching in ("vmap", "scan"):
            learner = make_learner("mamlpp", model, task_batching=batching, **kwargs)
            step = functools.partial(learner.meta_grad, meta_step=meta_step)
            results.append(jax.jit(step)(meta, episodes))
        (grads, train_metrics), (scan_grads, _) = results
        chex.assert_trees_all_close(scan_grads, grads, rtol=1e-10, atol=1e-13)
        assert all(float(jnp.abs(g).max()) > 1e-6 for g in jax.tree.leaves(grads["per_step_bn"]))
        # Evaluation adapts and scores with the same copies as training's final query loss.
        metrics = jax.jit(learner.evaluate)(meta, episodes)
        np.testing.assert_allclose(
            metrics["loss"].mean(), train_metrics["final_query_loss"], rtol=1e-12
        )


def test_a_jitted_make_step_learns_the_per_step_copies():
    model, _, _, episodes = _bn_setup(tasks=2)
    learner = make_learner("mamlpp", model, num_inner_steps=1, per_step_bn=True)
    meta = learner.init(jax.random.key(1), episodes.support_inputs[0])
    optimizer = optax.adam(1e-2)
    step = make_step(learner, optimizer, donate=False)
    new, _, metrics = step(meta, optimizer.init(meta), episodes, jnp.asarray(0))
    assert np.isfinite(metrics["loss"])
    old_copies, new_copies = (
        jax.tree.leaves(meta["per_step_bn"]),
        jax.tree.leaves(new["per_step_bn"]),
    )
    for old, updated in zip(old_copies, new_copies):
        chex.assert_shape(updated, (2, 5))
        assert np.all(np.any(old != updated, axis=1)), "every copy is meta-learned"
    # θ's own batch-norm leaves are unused: zero gradient, so Adam leaves them as they were.
    chex.assert_trees_all_equal(
        new["model"]["params"]["BatchStatNorm_0"], meta["model"]["params"]["BatchStatNorm_0"]
    )


def test_per_step_bn_errors_name_the_problem():
    _, loss_fn, params, episodes = _bn_setup()
    episode = _task(episodes, 0)
    no_bn = make_learner("mamlpp", MLP(hidden_sizes=(5, WAYS)), per_step_bn=True)
    with pytest.raises(ValueError, match="per_step_bn needs a model with batch-norm parameters"):
        no_bn.init(jax.random.key(0), episode.support_inputs)
    with pytest.raises(ValueError, match="per_step_bn must be a bool"):
        make_learner("mamlpp", _BatchNormNet(), per_step_bn="yes")
    settings = {"loss_fn": loss_fn, "num_steps": STEPS, "lslr": False, "per_step_bn": True}
    short = {"model": params, "per_step_bn": mpp.init_per_step_bn(params, num_steps=2)}
    expected = re.escape(
        "per_step_bn leaf ['params']['BatchStatNorm_0']['bias'] has shape (3, 5); expected (4, 5)"
    )
    with pytest.raises(ValueError, match=expected):
        mpp.multi_step_task_loss(short, episode, **settings)
    with pytest.raises(ValueError, match=r"meta_params must be a dict with keys \['model', 'per"):
        mpp.multi_step_task_loss({"model": params}, episode, **settings)
    partial = {"params": {"BatchStatNorm_0": {"scale": jnp.ones((STEPS + 1, 5))}}}
    with pytest.raises(
        ValueError, match=r"missing \[\"\['params'\]\['BatchStatNorm_0'\]\['bias'\]"
    ):
        mpp.multi_step_task_loss({"model": params, "per_step_bn": partial}, episode, **settings)
