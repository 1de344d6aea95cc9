"""Objectives by name, batch sampling, the jitted pretraining step."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax.representation import (
    PRETRAIN_OBJECTIVES,
    make_objective,
    make_pretrain_step,
    pretrain,
)
from mmjax.representation.pretrain import sample_batch


def toy_data(classes=5, examples=4, length=8, size=8):
    rng = np.random.default_rng(0)
    return {
        "image": jnp.asarray(rng.uniform(size=(classes, examples, size, size, 1)), jnp.float32),
        "strokes": jnp.asarray(rng.normal(size=(classes, examples, length, 3)), jnp.float32),
        "mask": jnp.ones((classes, examples, 2), jnp.float32),
    }


def test_sample_batch_draws_rows_of_the_data():
    data = toy_data()
    data["strokes"] = (
        data["strokes"].at[..., 0, 0].set(jnp.arange(20, dtype=jnp.float32).reshape(5, 4))
    )
    batch = sample_batch(jax.random.PRNGKey(0), data, 32)
    chex.assert_shape(batch["image"], (32, 8, 8, 1))
    chex.assert_shape(batch["mask"], (32, 2))
    ids = np.asarray(batch["strokes"][:, 0, 0]).astype(int)
    flat = np.asarray(data["image"]).reshape(20, 8, 8, 1)
    chex.assert_trees_all_equal(np.asarray(batch["image"]), flat[ids])  # images stay paired
    assert len(set(ids.tolist())) > 10
    with pytest.raises(ValueError, match="batch_size=1"):
        sample_batch(jax.random.PRNGKey(0), data, 1)


def test_unknown_objective_names_the_closest():
    with pytest.raises(ValueError, match="did you mean 'contrastive'"):
        make_objective("contrastiv")
    with pytest.raises(ValueError, match="rate=0.9"):
        make_objective("autoencoder", modality_dropout=0.9)
    assert PRETRAIN_OBJECTIVES[0] == "none" and len(PRETRAIN_OBJECTIVES) == 8


def test_pretrain_step_is_deterministic_and_moves_the_parameters():
    data = toy_data()
    objective = make_objective("dcca", features=4, latent=4, image_blocks=2, stroke_layers=1)
    params, history = pretrain(objective, data, jax.random.PRNGKey(0), steps=2, batch_size=8)
    again, history_again = pretrain(objective, data, jax.random.PRNGKey(0), steps=2, batch_size=8)
    chex.assert_trees_all_equal(params, again)
    assert history == history_again and len(history) == 2
    init, _ = pretrain(objective, data, jax.random.PRNGKey(0), steps=0, batch_size=8)
    assert any(
        not np.allclose(a, b) for a, b in zip(jax.tree.leaves(init), jax.tree.leaves(params))
    )
    step = make_pretrain_step(objective, optax.sgd(0.0), batch_size=8)
    same, _, metrics = step(params, optax.sgd(0.0).init(params), data, jax.random.PRNGKey(1))
    chex.assert_trees_all_close(same, params)
    assert np.isfinite(float(metrics["loss"]))
    with pytest.raises(ValueError, match="steps=-1"):
        pretrain(objective, data, jax.random.PRNGKey(0), steps=-1)
