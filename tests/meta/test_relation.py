"""Relation Networks: shapes, scores in [0, 1], both objectives against numpy."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.data.episodes import Episode
from mmjax.meta import relation
from mmjax.meta.learner import make_learner
from mmjax.nn.classifier import Classifier
from mmjax.nn.mlp import MLP

TASKS, WAYS, SHOTS, QUERIES, DIM = 4, 3, 2, 3, 5


def _setup():
    model = Classifier(MLP((16, 8), activate_final=True), num_classes=WAYS)
    keys = jax.random.split(jax.random.key(0), 2)
    support = jax.random.normal(keys[0], (TASKS, WAYS * SHOTS, DIM))
    query = jax.random.normal(keys[1], (TASKS, WAYS * QUERIES, DIM))
    episodes = Episode(
        support,
        jnp.tile(jnp.arange(WAYS).repeat(SHOTS), (TASKS, 1)),
        query,
        jnp.tile(jnp.arange(WAYS).repeat(QUERIES), (TASKS, 1)),
    )
    return model, episodes


def test_shapes_and_scores_in_unit_interval():
    model, episodes = _setup()
    learner = make_learner("relationnet", model, hidden_sizes=(8,))
    params = learner.init(jax.random.key(1), episodes.support_inputs[0])
    assert set(params) == {"encoder", "relation"}
    # The relation module sees concatenated pairs: 2 × the 8-wide embedding.
    chex.assert_shape(params["relation"]["params"]["Dense_0"]["kernel"], (16, 8))
    scores = relation.relation_scores(
        params, jax.tree.map(lambda a: a[0], episodes), model=model, hidden_sizes=(8,)
    )
    chex.assert_shape(scores, (WAYS * QUERIES, WAYS))
    assert np.all((np.asarray(scores) >= 0) & (np.asarray(scores) <= 1))
    assert np.std(np.asarray(scores)) > 0
    grads, metrics = jax.jit(learner.meta_grad)(params, episodes)
    chex.assert_trees_all_equal_shapes(grads, params)
    assert 0 <= float(metrics["mean_score"]) <= 1
    per_task = jax.jit(learner.evaluate)(params, episodes)
    chex.assert_shape([per_task["accuracy"], per_task["loss"]], (TASKS,))


def test_objectives_match_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, 2, 1, 0])
    one_hot = np.eye(3)[labels]
    scores = 1 / (1 + np.exp(-logits))
    mse = relation.relation_loss(jnp.asarray(logits), jnp.asarray(labels), objective="mse")
    np.testing.assert_allclose(mse, ((scores - one_hot) ** 2).sum(-1).mean(), rtol=1e-5)
    triplet = relation.relation_loss(jnp.asarray(logits), jnp.asarray(labels), objective="triplet")
    terms = [
        -np.log(1 / (1 + np.exp(-(logits[i, labels[i]] - logits[i, n]))))
        for i in range(6)
        for n in range(3)
        if n != labels[i]
    ]
    np.testing.assert_allclose(triplet, np.mean(terms), rtol=1e-5)


def test_triplet_objective_trains_the_relation_module():
    model, episodes = _setup()
    learner = make_learner("relationnet", model, objective="triplet")
    params = learner.init(jax.random.key(1), episodes.support_inputs[0])
    grads, metrics = jax.jit(learner.meta_grad)(params, episodes)
    assert np.isfinite(float(metrics["loss"]))
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads["relation"])) > 0


def test_unknown_objective_lists_valid_ones():
    model, _ = _setup()
    with pytest.raises(ValueError, match="objective='hinge' is not one of mse, triplet"):
        make_learner("relationnet", model, objective="hinge")
