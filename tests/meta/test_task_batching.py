"""Task batching: vmap, a scan over tasks and scans over chunks give the same meta-step."""

import functools

import chex
import jax
import jax.numpy as jnp
import pytest

from mmjax.data.episodes import Episode
from mmjax.meta import common, make_learner, maml
from mmjax.meta import task_batching as batching_lib
from mmjax.nn import Classifier, Conv4
from tests.precision import assert_within_sum_bound, float64, to_float64

WAYS, SHOTS, QUERIES, TASKS = 3, 1, 2, 5
BATCHINGS = ("vmap", "scan", 2, 5)  # 2 leaves a remainder of one task


def _conv_setup(tasks: int = TASKS):
    # Two blocks: the batching is what is tested, not the depth (a third of the compile time).
    model = Classifier(Conv4(features=6, num_blocks=2, conv_impl="im2col"), num_classes=WAYS)
    keys = jax.random.split(jax.random.key(0), 3)
    episodes = Episode(
        jax.random.uniform(keys[0], (tasks, WAYS * SHOTS, 12, 12, 1)),
        jnp.tile(jnp.arange(WAYS), (tasks, 1)),
        jax.random.uniform(keys[1], (tasks, WAYS * QUERIES, 12, 12, 1)),
        jnp.tile(jnp.repeat(jnp.arange(WAYS), QUERIES), (tasks, 1)),
    )
    return model, model.init(keys[2], episodes.support_inputs[0]), episodes


@pytest.mark.parametrize("first_order", [False, True])
def test_every_task_batching_equals_a_python_loop_over_tasks(first_order):
    """In float64, so any difference is a bug, not float32 rounding through batch norm."""
    with jax.enable_x64(True):
        model, params, episodes = _conv_setup()
        params, episodes = to_float64((params, episodes))
        kwargs = dict(
            loss_fn=maml.classification_loss(model.apply),
            inner_lr=0.4,
            num_steps=2,
            first_order=first_order,
        )
        one_task = jax.jit(jax.value_and_grad(lambda p, e: maml.task_loss(p, e, **kwargs)[0]))
        per_task = [
            one_task(params, jax.tree.map(lambda x, i=i: x[i], episodes)) for i in range(TASKS)
        ]
        loop_mean = jax.tree.map(lambda *g: sum(g) / TASKS, *(g for _, g in per_task))
        loop_loss = jnp.mean(jnp.stack([loss for loss, _ in per_task]))
        for batching in BATCHINGS:
            step = jax.jit(functools.partial(maml.meta_grad, task_batching=batching, **kwargs))
            grads, metrics = step(params, episodes)
            chex.assert_trees_all_close(grads, loop_mean, rtol=1e-9, atol=1e-11)
            chex.assert_trees_all_close(metrics["loss"], loop_loss, rtol=1e-12)
            assert set(metrics) == {"loss", "accuracy", "support_loss"}


def test_metrics_per_task_keep_the_task_axis_in_order():
    """Same metrics, in the same task order (an exactness claim: float64)."""
    with float64():
        model, params, episodes = _conv_setup()
        params, episodes = to_float64((params, episodes))
        per_task = functools.partial(
            maml.task_loss,
            loss_fn=maml.classification_loss(model.apply),
            inner_lr=0.4,
            num_steps=1,
        )
        reference = batching_lib.metrics_per_task(per_task, params, episodes, "vmap")
        chex.assert_shape(reference["loss"], (TASKS,))
        assert reference["loss"].dtype == jnp.float64
        assert float(jnp.min(jnp.abs(jnp.diff(reference["loss"])))) > 1e-6  # order is visible
        for batching in BATCHINGS[1:]:
            chex.assert_trees_all_close(
                batching_lib.metrics_per_task(per_task, params, episodes, batching),
                reference,
                rtol=1e-10,
                atol=1e-12,
            )


@pytest.mark.parametrize("name", ["maml", "anil", "metasgd", "protonet", "relationnet", "reptile"])
def test_learners_agree_across_task_batchings(name):
    model, _, episodes = _conv_setup()
    settings = {
        "maml": dict(inner_lr=0.4, num_inner_steps=1),
        "anil": dict(inner_lr=0.4, num_inner_steps=1),
        "metasgd": dict(inner_lr=0.4, num_inner_steps=1),
        "protonet": {},
        "relationnet": {},
        "reptile": dict(inner_lr=0.1, num_inner_steps=2),
    }[name]
    results = {}
    with float64():  # an exactness claim: compared in float64
        episodes = to_float64(episodes)
        for batching in ("vmap", 2):  # a chunk of 2 and a remainder of 1: both scan paths
            learner = make_learner(name, model, task_batching=batching, **settings)
            params = to_float64(learner.init(jax.random.key(1), episodes.support_inputs[0]))
            grads, metrics = jax.jit(learner.meta_grad)(params, episodes)
            results[batching] = (grads, metrics, jax.jit(learner.evaluate)(params, episodes))
        assert jax.tree.leaves(results[2][0])[0].dtype == jnp.float64
    # The batch's mean accuracy is a float32 mean of TASKS per-task accuracies: summed in
    # another order it may differ by float32 rounding (Higham's bound), not more.
    mean_accuracy = {b: r[1].pop("accuracy") for b, r in results.items()}
    assert_within_sum_bound(mean_accuracy[2], mean_accuracy["vmap"], 1.0, n=TASKS + 1)
    chex.assert_trees_all_close(results[2], results["vmap"], rtol=1e-9, atol=1e-11)
    chex.assert_shape(results[2][2]["accuracy"], (TASKS,))


def test_scan_keeps_one_task_of_activations():
    """The scanned meta-step's XLA temporary memory is a fraction of the vmapped one's."""
    model, params, episodes = _conv_setup(tasks=16)
    kwargs = dict(loss_fn=maml.classification_loss(model.apply), inner_lr=0.4, num_steps=1)
    temp = {}
    for batching in ("vmap", "scan"):
        step = jax.jit(functools.partial(maml.meta_grad, task_batching=batching, **kwargs))
        analysis = step.lower(params, episodes).compile().memory_analysis()
        if analysis is None:
            pytest.skip("memory_analysis() is not available on this backend")
        temp[batching] = analysis.temp_size_in_bytes
    assert temp["scan"] < 0.5 * temp["vmap"], temp


def test_auto_is_scan_on_a_single_cpu_device_only():
    expected = "scan" if jax.default_backend() == "cpu" and jax.device_count() == 1 else "vmap"
    assert batching_lib.resolve_task_batching("auto") == expected
    assert batching_lib.resolve_task_batching("vmap") == "vmap"
    assert batching_lib.resolve_task_batching(4) == 4


@pytest.mark.parametrize(
    "value, message",
    [
        (
            "loop",
            r"task_batching must be one of \('auto', 'vmap', 'scan'\) or an int >= 1; got 'loop'",
        ),
        (0, r"task_batching as a chunk size must be an int >= 1; got 0"),
        (True, r"task_batching must be one of .* or an int >= 1; got True"),
    ],
)
def test_bad_task_batching_is_refused_before_tracing(value, message):
    model, _, _ = _conv_setup()
    with pytest.raises(ValueError, match=message):
        batching_lib.resolve_task_batching(value)
    with pytest.raises(ValueError, match=message):
        make_learner("maml", model, inner_lr=0.4, num_inner_steps=1, task_batching=value)
    with pytest.raises(ValueError, match=message):
        common.check_learner_settings(
            {"inner_lr": 0.4, "num_inner_steps": 1, "task_batching": value}
        )
