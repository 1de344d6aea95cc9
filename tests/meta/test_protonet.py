"""Prototypical Networks: logits against hand-computed distances; learner behaviour."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.data.episodes import Episode
from mmjax.meta import protonet
from mmjax.meta.learner import make_learner
from mmjax.nn.classifier import Classifier
from mmjax.nn.mlp import MLP


def test_prototypes_are_class_means():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(6, 4)).astype(np.float32)
    labels = np.array([2, 0, 1, 0, 2, 1])
    got = protonet.prototypes(jnp.asarray(embeddings), jnp.asarray(labels), 3)
    want = np.stack([embeddings[labels == c].mean(axis=0) for c in range(3)])
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_euclidean_and_cosine_logits_match_numpy():
    rng = np.random.default_rng(1)
    queries = rng.normal(size=(7, 4)).astype(np.float32)
    protos = rng.normal(size=(3, 4)).astype(np.float32)
    want = np.array([[-np.sum((q - c) ** 2) for c in protos] for q in queries])
    got = protonet.prototype_logits(jnp.asarray(queries), jnp.asarray(protos))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    got = protonet.prototype_logits(jnp.asarray(queries), jnp.asarray(protos), scale=2.5)
    np.testing.assert_allclose(got, 2.5 * want, rtol=1e-5, atol=1e-5)
    cosine = np.array(
        [[q @ c / (np.linalg.norm(q) * np.linalg.norm(c)) for c in protos] for q in queries]
    )
    got = protonet.prototype_logits(
        jnp.asarray(queries), jnp.asarray(protos), distance="cosine", scale=10.0
    )
    np.testing.assert_allclose(got, 10.0 * cosine, rtol=1e-5, atol=1e-5)


def test_unknown_distance_lists_valid_ones():
    with pytest.raises(ValueError, match=r"distance='manhattan' is not one of euclidean, cosine"):
        protonet.prototype_logits(jnp.ones((1, 2)), jnp.ones((1, 2)), distance="manhattan")
    model = Classifier(MLP((4,)), num_classes=3)
    with pytest.raises(ValueError, match="euclidean, cosine"):
        make_learner("protonet", model, distance="dot")


def _episodes(key, tasks=4, ways=3, shots=2, queries=3, dim=5):
    keys = jax.random.split(key, 3)
    centers = 2 * jax.random.normal(keys[0], (tasks, ways, dim))
    s_labels = jnp.tile(jnp.arange(ways).repeat(shots), (tasks, 1))
    q_labels = jnp.tile(jnp.arange(ways).repeat(queries), (tasks, 1))
    take = jax.vmap(lambda c, labels: c[labels])
    support = take(centers, s_labels) + 0.3 * jax.random.normal(keys[1], s_labels.shape + (dim,))
    query = take(centers, q_labels) + 0.3 * jax.random.normal(keys[2], q_labels.shape + (dim,))
    return Episode(support, s_labels, query, q_labels)


@pytest.mark.parametrize("distance, learn_scale", [("euclidean", False), ("cosine", True)])
def test_learner_metrics_and_scale_gradient(distance, learn_scale):
    model = Classifier(MLP((16, 8)), num_classes=3)
    learner = make_learner("protonet", model, distance=distance, scale=3.0, learn_scale=learn_scale)
    episodes = _episodes(jax.random.key(0))
    params = learner.init(jax.random.key(1), episodes.support_inputs[0])
    assert set(params) == {"encoder", "scale"}
    grads, metrics = jax.jit(learner.meta_grad)(params, episodes)
    chex.assert_trees_all_equal_shapes(grads, params)
    assert (float(jnp.abs(grads["scale"])) > 0) == learn_scale
    # The learner's loss equals the cross-entropy of hand-built logits.
    embed = lambda x: model.encoder.apply(params["encoder"], x)
    e = jax.tree.map(lambda a: a[0], episodes)
    joint = embed(jnp.concatenate([e.support_inputs, e.query_inputs]))
    support, query = np.asarray(joint[:6]), np.asarray(joint[6:])
    protos = np.stack([support[np.asarray(e.support_labels) == c].mean(0) for c in range(3)])
    if distance == "euclidean":
        logits = -3.0 * ((query[:, None] - protos[None]) ** 2).sum(-1)
    else:
        unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
        logits = 3.0 * unit(query) @ unit(protos).T
    logits = logits - logits.max(-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = -log_probs[np.arange(9), np.asarray(e.query_labels)].mean()
    per_task = jax.jit(learner.evaluate)(params, episodes)
    chex.assert_shape([per_task["accuracy"], per_task["loss"]], (4,))
    np.testing.assert_allclose(per_task["loss"][0], want, rtol=1e-4)
    # Well-separated synthetic classes: nearest prototype is right far above chance (1/3).
    assert float(metrics["accuracy"]) > 0.6


class _TwoModalities(nn.Module):
    """A fused embedding of a pytree input ``{"a": [n, 3], "b": [n, 2]}``."""

    @nn.compact
    def __call__(self, inputs):
        return nn.Dense(4)(jnp.concatenate([inputs["a"], nn.Dense(3)(inputs["b"])], axis=-1))


def test_works_on_fused_multimodal_embeddings():
    model = Classifier(_TwoModalities(), num_classes=2)
    learner = make_learner("protonet", model)
    x = {"a": jnp.ones((3, 4, 3)), "b": jnp.arange(24.0).reshape(3, 4, 2)}
    labels = jnp.tile(jnp.array([0, 0, 1, 1]), (3, 1))
    episodes = Episode(x, labels, x, labels)
    params = learner.init(jax.random.key(0), jax.tree.map(lambda a: a[0], x))
    grads, metrics = jax.jit(learner.meta_grad)(params, episodes)
    assert np.isfinite(float(metrics["loss"]))
    chex.assert_trees_all_equal_shapes(grads, params)
