"""Classifier's mixed precision (model.dtype='bfloat16'): the meta-step against float32 and float64."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mmjax.meta import maml
from mmjax.nn import Classifier, Conv4
from mmjax.train import builders
from tests.precision import UNIT_ROUNDOFF_FLOAT32, float64, to_float64

UNIT_ROUNDOFF_BFLOAT16 = 2.0**-8  # 8 significand bits (7 stored)
WAYS, SHOTS, QUERIES, TASKS, SIZE = 5, 1, 3, 2, 14


def _model(dtype):
    return Classifier(Conv4(features=8, num_blocks=2), num_classes=WAYS, dtype=dtype)


def _episodes():
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    return maml.Episode(
        jax.random.uniform(keys[0], (TASKS, WAYS * SHOTS, SIZE, SIZE, 1)),
        jnp.tile(jnp.repeat(jnp.arange(WAYS), SHOTS), (TASKS, 1)),
        jax.random.uniform(keys[1], (TASKS, WAYS * QUERIES, SIZE, SIZE, 1)),
        jnp.tile(jnp.repeat(jnp.arange(WAYS), QUERIES), (TASKS, 1)),
    )


def _meta_grad(dtype, params, episodes, steps=1):
    loss_fn = maml.classification_loss(_model(dtype).apply)
    return jax.jit(
        lambda p, e: maml.meta_grad(
            p, e, loss_fn=loss_fn, inner_lr=0.4, num_steps=steps, task_batching="vmap"
        )
    )(params, episodes)


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def _rel(got, want):
    got, want = _flat(got), _flat(want)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def _round_to_bfloat16(tree):
    return jax.tree.map(lambda x: x.astype(jnp.bfloat16).astype(x.dtype), tree)


def test_bfloat16_keeps_the_parameter_tree_and_float32_logits():
    episodes = _episodes()
    x = episodes.support_inputs[0]
    params32 = _model("float32").init(jax.random.PRNGKey(1), x)
    params16 = _model("bfloat16").init(jax.random.PRNGKey(1), x)
    assert jax.tree.structure(params16) == jax.tree.structure(params32)
    assert {leaf.dtype for leaf in jax.tree.leaves(params16)} == {jnp.dtype(jnp.float32)}
    jax.tree.map(np.testing.assert_array_equal, params16, params32)  # same initialisation
    logits = _model("bfloat16").apply(params32, x)
    assert logits.dtype == jnp.float32 and logits.shape == (WAYS * SHOTS, WAYS)
    with pytest.raises(ValueError, match="param_dtype='bfloat16' is not one of"):
        Classifier(Conv4(features=8), WAYS, param_dtype="bfloat16").init(jax.random.PRNGKey(1), x)
    with pytest.raises(ValueError, match="dtype='float16' is not one of"):
        Classifier(Conv4(features=8), WAYS, dtype="float16").init(jax.random.PRNGKey(1), x)


def test_bfloat16_meta_step_equals_float32_within_the_rounding_bound():
    episodes = _episodes()
    params = _model("float32").init(jax.random.PRNGKey(1), episodes.support_inputs[0])
    grads32, metrics32 = _meta_grad("float32", params, episodes)
    grads16, metrics16 = _meta_grad("bfloat16", params, episodes)
    with float64():
        grads64, _ = _meta_grad("float32", to_float64(params), to_float64(episodes))
        # The images and parameters as bfloat16 stores them, the rest exact: what rounding
        # the inputs alone does to the gradient.
        rounded = _round_to_bfloat16((to_float64(params), to_float64(episodes)))
        grads64_rounded, _ = _meta_grad("float32", *rounded)

    # The bound. To first order a rounding error is linear in the unit roundoff u: the
    # error is sum_i s_i delta_i over the rounding sites i, |delta_i| <= u. The float32 run
    # measures the amplification of the sites both runs share: c = e32 / u32. bfloat16
    # rounds the same sites with u16 = 2**-8, giving c * u16, and in addition rounds the
    # images and parameters where it casts them, whose effect e_in is computed exactly
    # above (float64 at the rounded inputs). The rounding errors are of random sign, so
    # c * u16 is a typical size, not a worst case: the assertion allows 4x the prediction.
    e32 = _rel(grads32, grads64)
    e_in = _rel(grads64_rounded, grads64)
    e16 = _rel(grads16, grads64)
    predicted = e_in + e32 / UNIT_ROUNDOFF_FLOAT32 * UNIT_ROUNDOFF_BFLOAT16
    assert e32 < 1e3 * UNIT_ROUNDOFF_FLOAT32  # the float32 reference itself is sound
    assert e16 <= 4 * predicted, (e16, e_in, e32)
    assert e16 > e32  # bfloat16 did run: its error is not float32's
    assert metrics16["loss"].dtype == jnp.float32  # the loss is float32
    np.testing.assert_allclose(
        float(metrics16["loss"]), float(metrics32["loss"]), rtol=4 * predicted
    )

    # Master parameters, gradients and optimizer state stay float32 through an update.
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(params)
    updates, opt_state = optimizer.update(grads16, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    for tree in (grads16, new_params, opt_state):
        floats = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
        assert floats and {x.dtype for x in floats} == {jnp.dtype(jnp.float32)}


def test_builders_read_the_dtype_keys_with_float32_defaults():
    config = ml_collections.ConfigDict(
        {
            "ways": WAYS,
            "model": {
                "encoder": "conv4",
                "features": 8,
                "num_blocks": 2,
                "pool": "stride",
                "conv_impl": "auto",
            },
        }
    )
    model = builders.build_model(config)
    assert (model.dtype, model.param_dtype) == ("float32", "float32")
    config.model.dtype = "bfloat16"
    assert builders.build_model(config).dtype == "bfloat16"
