"""MultimodalEncoder: shapes for every fusion method, masked modalities have no influence,
MAML works through it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.data.episodes import Episode
from mmjax.fusion import FUSION_METHODS
from mmjax.meta.maml import maml_learner
from mmjax.nn import Conv4, StrokeEncoder
from mmjax.nn.classifier import Classifier
from mmjax.nn.multimodal import MultimodalEncoder, fusion_kwargs

FEATURES = 8
# Rows: both, image only, strokes only, both, image only, strokes only.
MASK = np.array([[1, 1], [1, 0], [0, 1]] * 2, np.float32)


def make_encoder(fusion):
    return MultimodalEncoder(
        fusion=fusion,
        features=FEATURES,
        image_encoder=Conv4(features=FEATURES, num_blocks=2),
        stroke_encoder=StrokeEncoder(features=FEATURES, num_layers=1),
    )


def make_inputs(key, batch=6, mask=MASK):
    k1, k2 = jax.random.split(key)
    return {
        "image": jax.random.uniform(k1, (batch, 12, 12, 1)),
        "strokes": jax.random.normal(k2, (batch, 10, 3)),
        "mask": jnp.asarray(mask),
    }


@pytest.mark.parametrize("fusion", sorted(FUSION_METHODS))
def test_output_shape_and_masked_modality_has_no_influence(fusion):
    model = Classifier(encoder=make_encoder(fusion), num_classes=5)
    inputs = make_inputs(jax.random.PRNGKey(0))
    params = model.init(jax.random.PRNGKey(1), inputs)
    encoder = make_encoder(fusion)
    features = encoder.apply({"params": params["params"]["encoder"]}, inputs)
    assert features.shape == (6, FEATURES)
    logits = model.apply(params, inputs)
    assert logits.shape == (6, 5) and np.isfinite(np.asarray(logits)).all()

    # Garbage (NaN) in the masked entries changes nothing.
    image_off = (MASK[:, 0] == 0)[:, None, None, None]
    strokes_off = (MASK[:, 1] == 0)[:, None, None]
    corrupted = dict(
        inputs,
        image=jnp.where(image_off, jnp.nan, inputs["image"]),
        strokes=jnp.where(strokes_off, 1e6, inputs["strokes"]),
    )
    np.testing.assert_array_equal(model.apply(params, corrupted), logits)

    grads = jax.grad(lambda x: jnp.sum(jnp.sin(model.apply(params, x))))(inputs)
    image_grad = np.abs(np.asarray(grads["image"])).sum(axis=(1, 2, 3))
    stroke_grad = np.abs(np.asarray(grads["strokes"])).sum(axis=(1, 2))
    assert np.all(image_grad[MASK[:, 0] == 0] == 0)
    assert np.all(stroke_grad[MASK[:, 1] == 0] == 0)
    assert np.all(image_grad[MASK[:, 0] == 1] > 0)
    assert np.all(stroke_grad[MASK[:, 1] == 1] > 0)


def test_single_modality_baselines_are_the_same_compiled_function():
    model = Classifier(encoder=make_encoder("concat"), num_classes=5)
    inputs = make_inputs(jax.random.PRNGKey(0))
    params = model.init(jax.random.PRNGKey(1), inputs)
    apply = jax.jit(model.apply)
    image_only = apply(params, dict(inputs, mask=jnp.tile(jnp.array([[1.0, 0.0]]), (6, 1))))
    strokes_only = apply(params, dict(inputs, mask=jnp.tile(jnp.array([[0.0, 1.0]]), (6, 1))))
    both = apply(params, dict(inputs, mask=jnp.ones((6, 2))))
    assert apply._cache_size() == 1
    assert not np.allclose(image_only, strokes_only) and not np.allclose(image_only, both)


def test_second_order_maml_meta_grad_on_the_multimodal_classifier():
    # First-order MAML through the same model is exercised by tests/train/test_multimodal_train.py.
    model = Classifier(encoder=make_encoder("gated"), num_classes=3)
    key = jax.random.PRNGKey(2)
    mask = np.array([[1, 1], [1, 0], [0, 1]], np.float32)
    support = jax.tree.map(
        lambda *x: jnp.stack(x), *[make_inputs(k, 3, mask) for k in jax.random.split(key, 2)]
    )
    query = jax.tree.map(
        lambda *x: jnp.stack(x), *[make_inputs(k, 3, mask) for k in jax.random.split(key + 1, 2)]
    )
    labels = jnp.tile(jnp.arange(3, dtype=jnp.int32), (2, 1))
    episodes = Episode(support, labels, query, labels)
    learner = maml_learner(model, inner_lr=0.4, num_inner_steps=1, first_order=False)
    params = learner.init(key, jax.tree.map(lambda x: x[0], support))
    grads, metrics = jax.jit(learner.meta_grad)(params, episodes)
    leaves = [np.asarray(g) for g in jax.tree.leaves(grads)]
    assert all(np.isfinite(g).all() for g in leaves)
    norms = {
        jax.tree_util.keystr(p): float(jnp.abs(g).sum())
        for p, g in jax.tree_util.tree_leaves_with_path(grads)
    }
    assert sum(norms.values()) > 0
    # Both encoders and the head receive gradient.
    for part in ("image_encoder", "stroke_encoder", "head"):
        assert sum(v for k, v in norms.items() if part in k) > 0, part
    assert np.isfinite(float(metrics["loss"])) and metrics["loss"] > 0


def test_fusion_kwargs_for_logit_fusions_and_unknown_name():
    assert fusion_kwargs("late", 16) == {"num_classes": 16}
    assert fusion_kwargs("cross_attention", 16, 2) == {"features_out": 16, "num_heads": 2}
    with pytest.raises(ValueError, match="concat"):
        fusion_kwargs("concatenate", 16)


def test_bad_inputs_raise_clear_errors():
    encoder = make_encoder("concat")
    inputs = make_inputs(jax.random.PRNGKey(0))
    params = encoder.init(jax.random.PRNGKey(1), inputs)
    with pytest.raises(ValueError, match="keys"):
        encoder.apply(params, {"image": inputs["image"]})
    with pytest.raises(ValueError, match=r"inputs\['mask'\] has shape \(2, 6\)"):
        encoder.apply(params, dict(inputs, mask=inputs["mask"].T))
    with pytest.raises(ValueError, match=r"inputs\['strokes'\]"):
        encoder.apply(params, dict(inputs, strokes=inputs["strokes"][:3]))
    with pytest.raises(ValueError, match="every modality masked"):
        encoder.apply(params, dict(inputs, mask=inputs["mask"].at[0].set(0)))
