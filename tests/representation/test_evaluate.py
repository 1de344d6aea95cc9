"""ProtoNet episodes on a frozen embedding and cross-modal retrieval."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.representation import cross_modal_retrieval, protonet_accuracies, recall_at_k
from mmjax.representation.evaluate import CCAEmbed, fit_cca_on_drawings


def labelled_data(classes=6, examples=4):
    """Images whose first pixel is the class index, strokes whose first offset is the drawing id."""
    image = np.zeros((classes, examples, 28, 28, 1), np.float32)
    image[..., 0, 0, 0] = np.arange(classes)[:, None]
    strokes = np.zeros((classes, examples, 8, 3), np.float32)
    strokes[..., 0, 0] = np.arange(classes * examples).reshape(classes, examples)
    image[..., 0, 1, 0] = strokes[..., 0, 0]
    mask = np.ones((classes, examples, 2), np.float32)
    return {"image": jnp.asarray(image), "strokes": jnp.asarray(strokes), "mask": jnp.asarray(mask)}


def class_embed(params, inputs):
    """An oracle embedding: one-hot of the class index read from the image."""
    return jax.nn.one_hot(inputs["image"][:, 0, 0, 0].astype(jnp.int32), 6) * params


def test_protonet_on_an_oracle_embedding_is_perfect_and_on_a_constant_is_chance():
    data = labelled_data()
    acc = protonet_accuracies(
        class_embed,
        jnp.float32(1.0),
        data,
        jax.random.PRNGKey(0),
        ways=5,
        shots=1,
        queries=3,
        num_episodes=7,
        batch_size=3,
    )
    assert acc.shape == (7,) and np.all(acc == 1.0)
    constant = protonet_accuracies(
        class_embed,
        jnp.float32(0.0),
        data,
        jax.random.PRNGKey(0),
        ways=5,
        shots=1,
        queries=3,
        num_episodes=4,
    )
    np.testing.assert_allclose(constant, 1 / 5)  # all logits tie: argmax picks label 0
    with pytest.raises(ValueError):
        protonet_accuracies(
            class_embed, 1.0, data, jax.random.PRNGKey(0), ways=7, shots=1, queries=1
        )


def test_recall_at_k_closed_forms():
    q = np.eye(4)
    assert recall_at_k(q, q) == {"recall@1": 1.0, "recall@5": 1.0, "median_rank": 1.0}
    g = np.array([[0.9, 0.1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0.5, 1]])
    # queries 2, 3 find their own row first; query 0 finds row 1 (cosine 1) before its own
    # (0.994): rank 2; query 1 has cosine 0 with its own row, tied with rows 1-3: rank 4.
    result = recall_at_k(q, g, ks=(1, 2))
    assert result == {"recall@1": 0.5, "recall@2": 0.75, "median_rank": 1.5}
    with pytest.raises(ValueError, match="gallery"):
        recall_at_k(q, g[:3])


def test_cross_modal_retrieval_with_a_matching_embedding_is_perfect():
    data = labelled_data()

    def drawing_embed(params, inputs):  # image -> its drawing id; strokes -> the same id
        ids = jnp.where(
            inputs["mask"][:, 0] > 0, inputs["image"][:, 0, 1, 0], inputs["strokes"][:, 0, 0]
        )
        return jax.nn.one_hot(ids.astype(jnp.int32), 24)

    result = cross_modal_retrieval(drawing_embed, None, data, jax.random.PRNGKey(0), batch_size=10)
    assert result["recall@1"] == 1.0 and result["gallery"] == 24


def two_view_drawings(rng, mix, rotation, classes, examples=10, noise=0.3):
    """Drawings whose image holds a feature vector x in its first row and whose strokes hold
    (x @ mix + noise) @ rotation in their first column (a linearly related, rotated view)."""
    d = mix.shape[0]
    x = rng.normal(size=(classes, examples, d))
    y = (x @ mix + noise * rng.normal(size=x.shape)) @ rotation
    image = np.zeros((classes, examples, 28, 28, 1), np.float32)
    image[..., 0, :d, 0] = x
    strokes = np.zeros((classes, examples, 20, 3), np.float32)
    strokes[..., :d, 0] = y
    mask = np.ones((classes, examples, 2), np.float32)
    return {"image": jnp.asarray(image), "strokes": jnp.asarray(strokes), "mask": jnp.asarray(mask)}


def feature_embed(params, inputs):
    """Masked mean of the two views' raw features (16 each), like MultimodalEmbedding.embed."""
    views = jnp.stack([inputs["image"][:, 0, :16, 0], inputs["strokes"][:, :16, 0]])
    keep = (inputs["mask"] != 0).T[..., None]
    total = jnp.sum(jnp.where(keep, views, 0.0), axis=0)
    return total / jnp.maximum(jnp.sum(keep, axis=0), 1)


def test_deep_cca_protocol_fits_on_train_drawings_and_retrieves_in_the_canonical_space():
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(16, 16))
    rotation, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    train = two_view_drawings(rng, mix, rotation, classes=100)
    test = two_view_drawings(rng, mix, rotation, classes=20)  # 200 new drawings
    raw = cross_modal_retrieval(feature_embed, None, test, jax.random.PRNGKey(0), batch_size=64)
    assert raw["recall@1"] < 0.05 and raw["gallery"] == 200, raw  # chance: 0.005

    projection = fit_cca_on_drawings(
        feature_embed, None, train, jax.random.PRNGKey(1), num_drawings=600, dim=8
    )
    assert projection.image_weights.shape == (16, 8) and projection.correlations[-1] > 0.9
    params = {"encoder": None, "cca": projection}
    fitted = cross_modal_retrieval(
        CCAEmbed(feature_embed), params, test, jax.random.PRNGKey(0), batch_size=64
    )
    assert fitted["recall@1"] > 0.95, fitted
    # The fused embedding is the mean of the two projected views (one view: that view alone).
    both = CCAEmbed(feature_embed)(params, jax.tree.map(lambda x: x[0], test))
    image = CCAEmbed(feature_embed)(
        params, dict(jax.tree.map(lambda x: x[0], test), mask=jnp.array([[1.0, 0.0]] * 10))
    )
    strokes = CCAEmbed(feature_embed)(
        params, dict(jax.tree.map(lambda x: x[0], test), mask=jnp.array([[0.0, 1.0]] * 10))
    )
    assert both.shape == (10, 8)
    np.testing.assert_allclose(both, (image + strokes) / 2, atol=1e-5)
