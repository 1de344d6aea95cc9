"""Multimodal regression tasks: published parameter ranges, shapes, modes, determinism."""

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.data import regression


@pytest.mark.parametrize("family", regression.FAMILIES)
def test_sampled_parameters_lie_in_published_ranges(family):
    params = jax.vmap(lambda k: regression.sample_parameters(k, family))(
        jax.random.split(jax.random.key(0), 2000)
    )
    assert set(params) == set(regression.PARAMETER_RANGES[family])
    for name, (low, high) in regression.PARAMETER_RANGES[family].items():
        values = np.asarray(params[name])
        if family == "quadratic" and name == "amplitude":
            # |a| in [0.02, 0.15] with either sign, both signs present.
            assert (values > 0).mean() > 0.4 and (values < 0).mean() > 0.4
            values = np.abs(values)
        assert values.min() >= low and values.max() <= high, (name, values.min(), values.max())
        # The samples cover the range (uniform): extremes within 2% of its ends.
        assert values.min() < low + 0.02 * (high - low) and values.max() > high - 0.02 * (
            high - low
        )


def test_published_range_table():
    r = regression.PARAMETER_RANGES
    assert r["sinusoid"] == {"amplitude": (0.1, 5.0), "phase": (0.0, np.pi)}
    assert r["linear"] == {"slope": (-3.0, 3.0), "intercept": (-3.0, 3.0)}
    assert r["quadratic"]["amplitude"] == (0.02, 0.15)
    assert regression.MIXTURES[2] == ("sinusoid", "linear")
    assert regression.MIXTURES[3] == ("sinusoid", "linear", "quadratic")


BATCH, SHOTS, QUERIES = 500, 6, 4  # one compiled sampler shared by the tests below


def _tasks(noise_std):
    return regression.sample_regression_tasks(
        jax.random.key(2),
        num_modes=5,
        batch_size=BATCH,
        shots=SHOTS,
        queries=QUERIES,
        noise_std=noise_std,
    )


def test_task_shapes_inputs_and_modes():
    episodes, modes = _tasks(0.3)
    chex.assert_shape(episodes.support_inputs, (BATCH, SHOTS, 1))
    chex.assert_shape(episodes.support_labels, (BATCH, SHOTS))
    chex.assert_shape(episodes.query_inputs, (BATCH, QUERIES, 1))
    chex.assert_shape(episodes.query_labels, (BATCH, QUERIES))
    assert episodes.support_labels.dtype == jnp.float32
    x = np.asarray(episodes.support_inputs)
    assert x.min() >= -5 and x.max() <= 5 and x.min() < -4.5 and x.max() > 4.5
    counts = np.bincount(np.asarray(modes), minlength=5)
    assert counts.min() > 60  # uniform over 5 modes: 100 expected each


def test_noise_free_tasks_follow_their_family():
    episodes, modes = _tasks(0.0)
    modes = np.asarray(modes)
    x = np.concatenate([episodes.support_inputs[..., 0], episodes.query_inputs[..., 0]], axis=1)
    y = np.concatenate([episodes.support_labels, episodes.query_labels], axis=1)
    for xi, yi in zip(x[modes == 1], y[modes == 1]):  # linear
        slope, intercept = np.polyfit(xi, yi, 1)
        np.testing.assert_allclose(np.polyval([slope, intercept], xi), yi, atol=1e-4)
        assert -3 <= slope <= 3 and -3 <= intercept <= 3
    for xi, yi in zip(x[modes == 2], y[modes == 2]):  # quadratic, |a| <= 0.15
        a = np.polyfit(xi, yi, 2)[0]
        assert 0.02 - 1e-4 <= abs(a) <= 0.15 + 1e-4
    assert np.abs(y[modes == 0]).max() <= 5.0  # sinusoid, A <= 5
    assert np.abs(y[modes == 4]).max() <= 6.0  # |a tanh(.) + b| <= 6
    # Noise: the same key with noise differs from the noise-free targets by about its std.
    noisy, noisy_modes = _tasks(0.3)
    np.testing.assert_array_equal(noisy_modes, modes)
    residual = np.asarray(noisy.support_labels) - np.asarray(episodes.support_labels)
    assert 0.27 < residual.std() < 0.33


def test_oracle_mode_fixes_the_family():
    _, modes = regression.sample_regression_tasks(
        jax.random.key(3), num_modes=3, batch_size=8, shots=2, queries=2, mode=2
    )
    np.testing.assert_array_equal(modes, 2)


def test_bad_arguments_name_valid_values():
    with pytest.raises(ValueError, match=r"num_modes=4 is not one of \[2, 3, 5\]"):
        regression.sample_regression_tasks(
            jax.random.key(0), num_modes=4, batch_size=2, shots=5, queries=5
        )
    with pytest.raises(ValueError, match="mode=3 must be in"):
        regression.sample_regression_tasks(
            jax.random.key(0), num_modes=3, batch_size=2, shots=5, queries=5, mode=3
        )
    with pytest.raises(ValueError, match="family='cubic' is not one of sinusoid, linear"):
        regression.sample_parameters(jax.random.key(0), "cubic")


# Property-based tests (hypothesis): a few task shapes (each compiles once), free keys and
# modes; invalid arguments from the whole range raise before tracing.
# (batch_size, shots, queries, num_modes, oracle mode or None)
TASK_SPECS = [(2, 1, 1, 5, None), (3, 5, 7, 2, 1)]


@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(spec=st.sampled_from(TASK_SPECS), seed=st.integers(0, 2**32 - 1))
def test_property_task_shapes_modes_and_input_range(spec, seed):
    batch_size, shots, queries, num_modes, mode = spec
    tasks, modes = regression.sample_regression_tasks(
        jax.random.PRNGKey(seed),
        num_modes=num_modes,
        batch_size=batch_size,
        shots=shots,
        queries=queries,
        mode=mode,
    )
    chex.assert_shape(tasks.support_inputs, (batch_size, shots, 1))
    chex.assert_shape(tasks.support_labels, (batch_size, shots))
    chex.assert_shape(tasks.query_inputs, (batch_size, queries, 1))
    chex.assert_shape(tasks.query_labels, (batch_size, queries))
    chex.assert_shape(modes, (batch_size,))
    assert modes.dtype == jnp.int32
    modes = np.asarray(modes)
    assert ((0 <= modes) & (modes < num_modes)).all()
    if mode is not None:
        assert (modes == mode).all()
    for x in (tasks.support_inputs, tasks.query_inputs):
        assert ((-5.0 <= np.asarray(x)) & (np.asarray(x) <= 5.0)).all()
    chex.assert_tree_all_finite(tasks)


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(
    name=st.sampled_from(["batch_size", "shots", "queries", "num_modes", "mode"]),
    value=st.integers(-3, 9),
)
def test_property_invalid_task_arguments_raise(name, value):
    kwargs = dict(num_modes=3, batch_size=2, shots=1, queries=1)
    if name == "mode":
        hypothesis.assume(not 0 <= value < 3)
        message = rf"mode={value} must be in \[0, 3\) for num_modes=3"
    elif name == "num_modes":
        hypothesis.assume(value not in (2, 3, 5))
        message = rf"num_modes={value} is not one of \[2, 3, 5\]"
    else:
        hypothesis.assume(value < 1)
        message = f"{name}={value} must be an int >= 1"
    kwargs[name] = value
    with pytest.raises(ValueError, match=message):
        regression.sample_regression_tasks(jax.random.PRNGKey(0), **kwargs)
