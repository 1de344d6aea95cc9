"""pmap and jit-with-shardings meta-steps equal the single-device step on 8 host devices."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import jax_utils

from mmjax.meta import maml, parallel
from tests.meta.test_maml import _episodes, _model_and_params
from tests.precision import float64

BATCH = 16


@pytest.fixture(scope="module")
def setup():
    if jax.device_count() < 8:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
    # An exactness claim (the same update, summed in another order): compared in float64.
    with float64():
        model, params = _model_and_params(jnp.float64)
        loss_fn = maml.classification_loss(model.apply)
        optimizer = optax.adam(1e-2)
        episodes = _episodes(jax.random.key(11), BATCH, jnp.float64)
        kwargs = dict(inner_lr=0.4, num_steps=2)
        single = maml.make_meta_train_step(loss_fn, optimizer, jit=True, **kwargs)
        want = single(jax.tree.map(jnp.copy, params), optimizer.init(params), episodes)
    assert jax.tree.leaves(want[0])[0].dtype == jnp.float64
    return loss_fn, optimizer, params, episodes, kwargs, want


@pytest.mark.parametrize("task_batching", ["auto", "scan"])
def test_pmap_step_equals_single_device(setup, task_batching):
    """Each device's tasks vmapped ("auto" on 8 devices) or scanned give the same update."""
    loss_fn, optimizer, params, episodes, kwargs, (want_params, _, want_metrics) = setup
    with float64():
        step = parallel.make_pmap_meta_train_step(
            loss_fn, optimizer, task_batching=task_batching, **kwargs
        )
        new_params, _, metrics = step(
            jax_utils.replicate(params),
            jax_utils.replicate(optimizer.init(params)),
            parallel.shard_for_pmap(episodes, 8),
        )
    for d in range(8):  # every device holds the same, correct update
        chex.assert_trees_all_close(
            jax.tree.map(lambda x: x[d], new_params), want_params, rtol=1e-10, atol=1e-12
        )
    np.testing.assert_allclose(metrics["loss"][0], want_metrics["loss"], rtol=1e-12)


def test_sharded_step_equals_single_device(setup):
    loss_fn, optimizer, params, episodes, kwargs, (want_params, _, want_metrics) = setup
    with float64():
        step, place_episodes, place_replicated = parallel.make_sharded_meta_train_step(
            loss_fn, optimizer, **kwargs
        )
        placed = place_episodes(episodes)
        assert len(placed.support_inputs.sharding.device_set) == 8
        chex.assert_shape(
            placed.support_inputs.addressable_shards[0].data,
            (BATCH // 8,) + episodes.support_inputs.shape[1:],
        )
        new_params, _, metrics = step(
            place_replicated(params), place_replicated(optimizer.init(params)), placed
        )
    chex.assert_trees_all_close(new_params, want_params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(metrics["loss"], want_metrics["loss"], rtol=1e-12)


def test_batch_not_divisible_by_devices_is_an_error(setup):
    *_, episodes, _, _ = setup
    with pytest.raises(ValueError, match="meta batch size 12 is not divisible by the 8 devices"):
        parallel.shard_for_pmap(jax.tree.map(lambda x: x[:12], episodes), 8)
