"""Meta-SGD: equal rates reduce to MAML; the rates' gradient; leaf-named structure errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.data.episodes import Episode
from mmjax.meta import maml, metasgd
from mmjax.meta.learner import make_learner
from mmjax.nn.classifier import Classifier
from mmjax.nn.mlp import MLP

WAYS, SHOTS, DIM = 3, 2, 5


def _setup():
    model = Classifier(MLP((8,), activation=jnp.tanh, activate_final=True), num_classes=WAYS)
    keys = jax.random.split(jax.random.key(0), 3)
    support = jax.random.normal(keys[0], (4, WAYS * SHOTS, DIM))
    query = jax.random.normal(keys[1], (4, WAYS * 3, DIM))
    episodes = Episode(
        support,
        jnp.tile(jnp.arange(WAYS).repeat(SHOTS), (4, 1)),
        query,
        jnp.tile(jnp.arange(WAYS).repeat(3), (4, 1)),
    )
    return model, episodes


@pytest.mark.parametrize("first_order", [False, True])
def test_equal_rates_equal_maml(first_order):
    model, episodes = _setup()
    learner = make_learner(
        "metasgd", model, inner_lr=0.3, num_inner_steps=2, first_order=first_order
    )
    meta = learner.init(jax.random.key(1), episodes.support_inputs[0])
    chex.assert_trees_all_equal_shapes(meta["inner_lr"], meta["model"])
    assert all(np.all(np.asarray(x) == np.float32(0.3)) for x in jax.tree.leaves(meta["inner_lr"]))
    grads, metrics = jax.jit(learner.meta_grad)(meta, episodes)
    kwargs = dict(
        loss_fn=maml.classification_loss(model.apply), num_steps=2, first_order=first_order
    )
    want, want_metrics = jax.jit(lambda p: maml.meta_grad(p, episodes, inner_lr=0.3, **kwargs))(
        meta["model"]
    )
    chex.assert_trees_all_close(grads["model"], want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(metrics["loss"], want_metrics["loss"], rtol=1e-6)
    # Summed over every rate, the gradient is d(meta-loss)/dα of MAML's shared scalar rate.
    d_alpha = jax.jit(
        jax.grad(lambda a: maml.meta_loss(meta["model"], episodes, inner_lr=a, **kwargs)[0])
    )(0.3)
    total = sum(float(jnp.sum(g)) for g in jax.tree.leaves(grads["inner_lr"]))
    np.testing.assert_allclose(total, d_alpha, rtol=1e-4)
    assert abs(total) > 1e-6


def test_per_parameter_rates_change_the_adaptation():
    model, episodes = _setup()
    learner = metasgd.metasgd_learner(model, inner_lr=0.3, num_inner_steps=1)
    meta = learner.init(jax.random.key(1), episodes.support_inputs[0])
    evaluate = jax.jit(learner.evaluate)
    before = evaluate(meta, episodes)["loss"]
    meta["inner_lr"]["params"]["head"]["bias"] = jnp.full((WAYS,), 3.0)
    after = evaluate(meta, episodes)["loss"]
    chex.assert_shape(after, (4,))
    assert np.max(np.abs(np.asarray(after) - np.asarray(before))) > 1e-3


def test_user_rate_pytree_is_checked_and_broadcast():
    model, episodes = _setup()
    params = model.init(jax.random.key(1), episodes.support_inputs[0])
    scalar_leaves = jax.tree.map(lambda p: 0.2, params)
    meta = metasgd.metasgd_learner(model, inner_lr=scalar_leaves, num_inner_steps=1).init(
        jax.random.key(1), episodes.support_inputs[0]
    )
    chex.assert_trees_all_close(
        meta["inner_lr"], jax.tree.map(lambda p: jnp.full_like(p, 0.2), params)
    )
    bad = jax.tree.map(lambda p: jnp.ones(p.shape), params)
    bad["params"]["head"]["kernel"] = jnp.ones((2, 2))
    with pytest.raises(ValueError, match=r"inner_lr leaf .*head.*kernel.* has shape \(2, 2\)"):
        metasgd.metasgd_learner(model, inner_lr=bad, num_inner_steps=1).init(
            jax.random.key(1), episodes.support_inputs[0]
        )
    missing = jax.tree.map(lambda p: jnp.ones(p.shape), params)
    del missing["params"]["encoder"]
    with pytest.raises(ValueError, match=r"inner_lr has no leaf .*encoder"):
        metasgd.init_inner_lr(missing, params)
