"""MAML: meta-gradients against finite differences and hand-written oracles."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax.meta import common, maml
from mmjax.meta.step import make_step
from mmjax.nn.mlp import MLP
from tests.precision import float64

WAYS, SHOTS, QUERIES, DIM = 3, 2, 4, 5


def _episodes(key, batch, dtype=jnp.float32):
    k1, k2, k3 = jax.random.split(key, 3)
    centers = jax.random.normal(k1, (batch, WAYS, DIM), dtype)
    support_labels = jnp.tile(jnp.repeat(jnp.arange(WAYS), SHOTS), (batch, 1))
    query_labels = jnp.tile(jnp.repeat(jnp.arange(WAYS), QUERIES), (batch, 1))
    take = jax.vmap(lambda c, labels: c[labels])
    support = take(centers, support_labels) + 0.5 * jax.random.normal(
        k2, (batch, WAYS * SHOTS, DIM), dtype
    )
    query = take(centers, query_labels) + 0.5 * jax.random.normal(
        k3, (batch, WAYS * QUERIES, DIM), dtype
    )
    return maml.Episode(support, support_labels, query, query_labels)


def _model_and_params(dtype=jnp.float32):
    model = MLP((8, WAYS), activation=jnp.tanh)
    params = model.init(jax.random.key(0), jnp.zeros((1, DIM), dtype))
    params = jax.tree.map(lambda x: x.astype(dtype), params)
    return model, params


def test_second_order_meta_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        model, params = _model_and_params(jnp.float64)
        episodes = _episodes(jax.random.key(1), 2, jnp.float64)
        loss_fn = maml.classification_loss(model.apply)
        f = jax.jit(
            lambda p: maml.meta_loss(p, episodes, loss_fn=loss_fn, inner_lr=0.5, num_steps=2)[0]
        )
        grads = jax.grad(f)(params)
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        eps = 1e-6
        numeric = np.array(
            [
                (f(unravel(flat.at[i].add(eps))) - f(unravel(flat.at[i].add(-eps)))) / (2 * eps)
                for i in range(flat.size)
            ]
        )
        analytic = np.asarray(jax.flatten_util.ravel_pytree(grads)[0])
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)
        # The first-order approximation must differ measurably from the true gradient here.
        fo = jax.grad(
            lambda p: maml.meta_loss(
                p, episodes, loss_fn=loss_fn, inner_lr=0.5, num_steps=2, first_order=True
            )[0]
        )(params)
        fo_flat = np.asarray(jax.flatten_util.ravel_pytree(fo)[0])
        assert np.max(np.abs(fo_flat - numeric)) > 1e-4


def test_first_order_equals_stopped_inner_gradients():
    with float64():  # an exactness claim: compared in float64
        model, params = _model_and_params(jnp.float64)
        episode = jax.tree.map(lambda x: x[0], _episodes(jax.random.key(2), 1, jnp.float64))
        loss_fn = maml.classification_loss(model.apply)

        def oracle(p):
            for _ in range(3):
                g = jax.grad(
                    lambda q: loss_fn(q, episode.support_inputs, episode.support_labels)[0]
                )(p)
                p = jax.tree.map(lambda a, b: a - 0.3 * jax.lax.stop_gradient(b), p, g)
            return loss_fn(p, episode.query_inputs, episode.query_labels)[0]

        got = jax.grad(
            lambda p: maml.task_loss(
                p, episode, loss_fn=loss_fn, inner_lr=0.3, num_steps=3, first_order=True
            )[0]
        )(params)
        chex.assert_trees_all_close(got, jax.grad(oracle)(params), rtol=1e-10, atol=1e-12)


def test_zero_inner_steps_is_plain_gradient():
    with float64():  # an exactness claim: compared in float64
        model, params = _model_and_params(jnp.float64)
        episode = jax.tree.map(lambda x: x[0], _episodes(jax.random.key(3), 1, jnp.float64))
        loss_fn = maml.classification_loss(model.apply)
        got = jax.grad(
            lambda p: maml.task_loss(p, episode, loss_fn=loss_fn, inner_lr=0.3, num_steps=0)[0]
        )(params)
        want = jax.grad(lambda p: loss_fn(p, episode.query_inputs, episode.query_labels)[0])(params)
        chex.assert_trees_all_close(got, want, rtol=1e-10, atol=1e-12)


def test_adapt_lowers_support_loss():
    model, params = _model_and_params()
    episode = jax.tree.map(lambda x: x[0], _episodes(jax.random.key(4), 1))
    loss_fn = maml.classification_loss(model.apply)
    adapted, losses = maml.adapt(
        params,
        episode.support_inputs,
        episode.support_labels,
        loss_fn=loss_fn,
        inner_lr=0.5,
        num_steps=5,
    )
    chex.assert_shape(losses, (5,))
    after = loss_fn(adapted, episode.support_inputs, episode.support_labels)[0]
    assert after < 0.7 * losses[0]


@pytest.mark.parametrize("first_order", [False, True])
def test_vmapped_meta_loss_equals_python_loop(first_order):
    with float64():  # an exactness claim: compared in float64
        model, params = _model_and_params(jnp.float64)
        episodes = _episodes(jax.random.key(5), 4, jnp.float64)
        kwargs = dict(
            loss_fn=maml.classification_loss(model.apply),
            inner_lr=0.4,
            num_steps=2,
            first_order=first_order,
        )
        grads, metrics = maml.meta_grad(params, episodes, **kwargs)
        per_task = [
            jax.grad(
                lambda p, e=jax.tree.map(lambda x: x[i], episodes): maml.task_loss(p, e, **kwargs)[  # noqa: B008 (binds task i)
                    0
                ]
            )(params)
            for i in range(4)
        ]
        loop_mean = jax.tree.map(lambda *g: sum(g) / 4, *per_task)
        chex.assert_trees_all_close(grads, loop_mean, rtol=1e-10, atol=1e-12)
        assert set(metrics) == {"loss", "accuracy", "support_loss"}


def test_remat_gives_equal_gradients():
    with float64():  # an exactness claim: compared in float64
        model, params = _model_and_params(jnp.float64)
        episodes = _episodes(jax.random.key(6), 2, jnp.float64)
        kwargs = dict(loss_fn=maml.classification_loss(model.apply), inner_lr=0.4, num_steps=3)
        plain, _ = maml.meta_grad(params, episodes, **kwargs)
        remat, _ = maml.meta_grad(params, episodes, remat=True, **kwargs)
        chex.assert_trees_all_close(plain, remat, rtol=1e-10, atol=1e-12)


def test_per_parameter_inner_lr_equal_rates_equal_scalar():
    with float64():  # an exactness claim: compared in float64
        model, params = _model_and_params(jnp.float64)
        episodes = _episodes(jax.random.key(7), 2, jnp.float64)
        loss_fn = maml.classification_loss(model.apply)
        tree_lr = jax.tree.map(lambda p: jnp.full(p.shape, 0.4, jnp.float64), params)
        common.check_inner_lr(tree_lr, params)
        a, _ = maml.meta_grad(params, episodes, loss_fn=loss_fn, inner_lr=0.4, num_steps=2)
        b, _ = maml.meta_grad(params, episodes, loss_fn=loss_fn, inner_lr=tree_lr, num_steps=2)
        chex.assert_trees_all_close(a, b, rtol=1e-10, atol=1e-12)


def test_inner_lr_structure_errors_name_the_leaf():
    _, params = _model_and_params()
    bad = jax.tree.map(lambda p: jnp.ones(p.shape), params)
    bad["params"]["Dense_1"]["bias"] = jnp.ones((7,))
    with pytest.raises(ValueError, match=r"Dense_1.*bias.*\(7,\).*\(3,\)"):
        common.check_inner_lr(bad, params)
    missing = jax.tree.map(lambda p: jnp.ones(p.shape), params)
    del missing["params"]["Dense_0"]
    with pytest.raises(ValueError, match="has no leaf.*Dense_0"):
        common.check_inner_lr(missing, params)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(inner_lr=0.0, num_inner_steps=1), "inner_lr must be > 0"),
        (dict(inner_lr=0.1, num_inner_steps=-1), "num_steps must be an int >= 0"),
        (dict(inner_lr=0.1, num_inner_steps=1.5), "num_steps must be an int >= 0"),
    ],
)
def test_bad_settings_raise(kwargs, message):
    model, _ = _model_and_params()
    with pytest.raises(ValueError, match=message):
        maml.maml_learner(model, **kwargs)


def test_meta_train_step_learns_synthetic_tasks():
    model, params = _model_and_params()
    loss_fn = maml.classification_loss(model.apply)
    optimizer = optax.adam(1e-2)
    step = make_step(maml.maml_learner(model, inner_lr=0.5, num_inner_steps=1), optimizer)
    opt_state = optimizer.init(params)
    eval_episodes = _episodes(jax.random.key(100), 64)
    before = maml.meta_loss(params, eval_episodes, loss_fn=loss_fn, inner_lr=0.5, num_steps=1)[0]
    for i in range(60):
        params, opt_state, metrics = step(params, opt_state, _episodes(jax.random.key(i), 16))
    after = maml.meta_loss(params, eval_episodes, loss_fn=loss_fn, inner_lr=0.5, num_steps=1)[0]
    assert after < 0.8 * before


@pytest.mark.parametrize("unroll", [True, 2])
def test_unrolled_inner_loop_gives_equal_gradients(unroll):
    with float64():  # an exactness claim: compared in float64
        model, params = _model_and_params(jnp.float64)
        episodes = _episodes(jax.random.key(7), 2, jnp.float64)
        kwargs = dict(loss_fn=maml.classification_loss(model.apply), inner_lr=0.4, num_steps=3)
        rolled, _ = maml.meta_grad(params, episodes, **kwargs)
        unrolled, _ = maml.meta_grad(params, episodes, unroll=unroll, **kwargs)
        chex.assert_trees_all_close(rolled, unrolled, rtol=1e-10, atol=1e-12)
