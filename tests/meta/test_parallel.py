"""make_step over 8 host devices (pmap, jit with shardings) equals the single-device step."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import jax_utils

from mmjax.meta import MetaGradient, make_learner, parallel
from mmjax.meta.step import make_step
from mmjax.nn.classifier import Classifier
from mmjax.nn.mlp import MLP
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
        optimizer = optax.adam(1e-2)
        episodes = _episodes(jax.random.key(11), BATCH, jnp.float64)
        kwargs = dict(inner_lr=0.4, num_inner_steps=2)
        single = make_step(make_learner("maml", model, **kwargs), optimizer)
        want = single(jax.tree.map(jnp.copy, params), optimizer.init(params), episodes)
    assert jax.tree.leaves(want[0])[0].dtype == jnp.float64
    return model, optimizer, params, episodes, kwargs, want


@pytest.mark.parametrize("task_batching", ["auto", "scan"])
def test_pmap_step_equals_single_device(setup, task_batching):
    """Each device's tasks vmapped ("auto" on 8 devices) or scanned give the same update."""
    model, optimizer, params, episodes, kwargs, (want_params, _, want_metrics) = setup
    with float64():
        learner = make_learner("maml", model, task_batching=task_batching, **kwargs)
        step = make_step(learner, optimizer, pmap_axis_name="devices")
        new_params, _, metrics = step(
            jax_utils.replicate(params),
            jax_utils.replicate(optimizer.init(params)),
            parallel.shard_for_pmap(episodes, 8),
        )
    for d in range(8):  # every device holds the same, correct update
        chex.assert_trees_all_close(
            jax.tree.map(lambda x, d=d: x[d], new_params), want_params, rtol=1e-10, atol=1e-12
        )
    np.testing.assert_allclose(metrics["loss"][0], want_metrics["loss"], rtol=1e-12)


def test_sharded_step_equals_single_device(setup):
    model, optimizer, params, episodes, kwargs, (want_params, _, want_metrics) = setup
    mesh = parallel.task_mesh()
    with float64():
        step = make_step(make_learner("maml", model, **kwargs), optimizer, mesh=mesh)
        placed = parallel.place_tasks(episodes, mesh)
        assert len(placed.support_inputs.sharding.device_set) == 8
        chex.assert_shape(
            placed.support_inputs.addressable_shards[0].data,
            (BATCH // 8,) + episodes.support_inputs.shape[1:],
        )
        new_params, _, metrics = step(
            parallel.place_replicated(params, mesh),
            parallel.place_replicated(optimizer.init(params), mesh),
            placed,
        )
    chex.assert_trees_all_close(new_params, want_params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(metrics["loss"], want_metrics["loss"], rtol=1e-12)


NON_MAML = {
    "protonet": dict(distance="euclidean"),
    "reptile": dict(inner_lr=0.3, num_inner_steps=2),
    # MAML's meta-gradient modes between first and second order, through the same step.
    "maml:truncated": dict(
        inner_lr=0.3, num_inner_steps=2, meta_gradient=MetaGradient("truncated", truncate=1)
    ),
    "maml:implicit": dict(
        inner_lr=0.3, num_inner_steps=2, meta_gradient=MetaGradient("implicit", cg_steps=5)
    ),
}


@pytest.mark.parametrize("name", sorted(NON_MAML))
@pytest.mark.parametrize("how", ["sharded", "pmap"])
def test_non_maml_learner_over_8_devices_equals_single_device(setup, name, how):
    """make_step is not MAML-only: the same update for a metric learner, Reptile and MAML's
    truncated and implicit meta-gradients."""
    *_, episodes, _, _ = setup
    with float64():
        model = Classifier(MLP((8,), activation=jnp.tanh), num_classes=3)
        learner = make_learner(name.split(":")[0], model, **NON_MAML[name])
        params = jax.tree.map(
            lambda x: x.astype(jnp.float64),
            learner.init(jax.random.key(2), episodes.support_inputs[0]),
        )
        # SGD, not Adam: a Euclidean ProtoNet's last bias has a zero gradient (distances are
        # shift invariant), whose rounding noise Adam would scale up to the step size.
        optimizer = optax.sgd(0.5)
        # Against a single-device step whose tasks are vmapped, not the one-device "auto".
        single = make_learner(name.split(":")[0], model, task_batching="vmap", **NON_MAML[name])
        want, _, want_metrics = make_step(single, optimizer, donate=False)(
            params, optimizer.init(params), episodes
        )
        assert jax.tree.leaves(want)[0].dtype == jnp.float64
        if how == "sharded":
            mesh = parallel.task_mesh()
            got, _, metrics = make_step(learner, optimizer, mesh=mesh)(
                parallel.place_replicated(params, mesh),
                parallel.place_replicated(optimizer.init(params), mesh),
                parallel.place_tasks(episodes, mesh),
            )
        else:
            got, _, metrics = make_step(learner, optimizer, pmap_axis_name="devices")(
                jax_utils.replicate(params),
                jax_utils.replicate(optimizer.init(params)),
                parallel.shard_for_pmap(episodes, 8),
            )
            got, metrics = jax.tree.map(lambda x: x[0], (got, metrics))
    changed = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - np.asarray(b)).max(), want, params)
    assert max(jax.tree.leaves(changed)) > 1e-4  # the step moved the parameters
    chex.assert_trees_all_close(got, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(metrics["loss"], want_metrics["loss"], rtol=1e-12)


def test_batch_not_divisible_by_devices_is_an_error(setup):
    *_, episodes, _, _ = setup
    with pytest.raises(ValueError, match="meta batch size 12 is not divisible by the 8 devices"):
        parallel.shard_for_pmap(jax.tree.map(lambda x: x[:12], episodes), 8)
    with pytest.raises(ValueError, match="meta batch size 12 is not divisible by the 8 devices"):
        parallel.place_tasks(jax.tree.map(lambda x: x[:12], episodes), parallel.task_mesh())
