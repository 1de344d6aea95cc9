"""Modality dropout (rate honoured, never all off) and evaluation conditions (exact masks)."""

import re

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.data.episodes import Episode
from mmjax.data.modality import (
    CONDITIONS,
    apply_condition,
    condition_masks,
    dropout_mask,
    modality_dropout,
)


def make_episodes(mask_support, mask_query):
    def inputs(mask):
        lead = mask.shape[:-1]
        return {
            "image": jnp.zeros(lead + (4, 4, 1)),
            "strokes": jnp.zeros(lead + (5, 3)),
            "mask": jnp.asarray(mask),
        }

    labels = jnp.zeros(mask_support.shape[:-1], jnp.int32)
    return Episode(inputs(mask_support), labels, inputs(mask_query), labels)


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5])
def test_dropout_rate_is_honoured_and_never_all_off(rate):
    mask = np.ones((400, 50, 2), np.float32)
    mask[:, :10, 1] = 0  # strokes missing in the data: the image must always stay.
    out = np.asarray(
        jax.jit(dropout_mask, static_argnames="rate")(jax.random.PRNGKey(0), mask, rate=rate)
    )
    assert out.shape == mask.shape and out.dtype == np.float32
    assert np.all(out.sum(-1) >= 1), "a sample lost every modality"
    assert np.all(out <= mask), "dropout switched a missing modality on"
    np.testing.assert_array_equal(out[:, :10], mask[:, :10])
    both = out[:, 10:]  # 16,000 samples with both present
    for m in range(2):
        dropped = 1 - both[..., m].mean()
        assert abs(dropped - rate) < 0.012, (m, dropped)
    # Independent samples: the fraction losing one modality is 2 * rate.
    assert abs((both.sum(-1) == 1).mean() - 2 * rate) < 0.015


def test_dropout_zero_rate_is_identity_and_bad_rates_raise():
    mask = np.ones((3, 2), np.float32)
    np.testing.assert_array_equal(dropout_mask(jax.random.PRNGKey(0), mask, rate=0.0), mask)
    for rate in (-0.1, 0.51, 1.0, True, "0.2"):
        with pytest.raises(ValueError, match="rate="):
            dropout_mask(jax.random.PRNGKey(0), mask, rate=rate)


def test_modality_dropout_on_a_batch_of_episodes_changes_only_masks():
    episodes = make_episodes(np.ones((8, 25, 2), np.float32), np.ones((8, 75, 2), np.float32))
    out = jax.jit(modality_dropout, static_argnames="rate")(
        jax.random.PRNGKey(3), episodes, rate=0.4
    )
    for part in ("support_inputs", "query_inputs"):
        mask = np.asarray(getattr(out, part)["mask"])
        assert mask.shape == np.shape(getattr(episodes, part)["mask"])
        assert np.all(mask.sum(-1) >= 1) and 0.2 < 1 - mask.mean() < 0.6
        np.testing.assert_array_equal(getattr(out, part)["image"], getattr(episodes, part)["image"])
    # Support and query draw different patterns.
    assert not np.array_equal(out.support_inputs["mask"][:, :25], out.query_inputs["mask"][:, :25])


def test_each_condition_sets_exactly_the_intended_entries():
    support = np.ones((2, 5, 2), np.float32)
    support[0, 0, 1] = 0  # a drawing without strokes stays without them
    query = np.ones((2, 15, 2), np.float32)
    episodes = make_episodes(support, query)
    expected = {
        "both": ([1, 1], [1, 1]),
        "image_only": ([1, 0], [1, 0]),
        "strokes_only": ([0, 1], [0, 1]),
        "missing_in_support": ([1, 0], [1, 1]),
        "missing_in_query": ([1, 1], [1, 0]),
    }
    assert set(expected) == set(CONDITIONS)
    for condition, (s, q) in expected.items():
        if condition == "strokes_only":
            with pytest.raises(ValueError, match="every modality off"):
                apply_condition(episodes, condition)  # the stroke-less drawing has nothing left
            out = apply_condition(make_episodes(np.ones_like(support), query), condition)
            want_support = np.broadcast_to(np.array(s, np.float32), support.shape)
        else:
            out = apply_condition(episodes, condition)
            want_support = support * np.array(s, np.float32)
        np.testing.assert_array_equal(out.support_inputs["mask"], want_support, err_msg=condition)
        np.testing.assert_array_equal(
            out.query_inputs["mask"], query * np.array(q, np.float32), err_msg=condition
        )
    with pytest.raises(ValueError, match="every modality off"):
        apply_condition(episodes, "missing_in_support", missing="image")
    full = np.ones_like(support)
    out = apply_condition(make_episodes(full, query), "missing_in_support", missing="image")
    np.testing.assert_array_equal(out.support_inputs["mask"], full * [0, 1])
    np.testing.assert_array_equal(out.query_inputs["mask"], query)


def test_condition_works_under_jit():
    episodes = make_episodes(np.ones((5, 2), np.float32), np.ones((10, 2), np.float32))
    out = jax.jit(apply_condition, static_argnames="condition")(episodes, "missing_in_query")
    np.testing.assert_array_equal(out.query_inputs["mask"], np.tile([1.0, 0.0], (10, 1)))


def test_bad_inputs_raise_clear_errors():
    good = make_episodes(np.ones((5, 2), np.float32), np.ones((10, 2), np.float32))
    with pytest.raises(ValueError, match="condition='image'"):
        apply_condition(good, "image")
    with pytest.raises(ValueError, match="missing='audio'"):
        condition_masks("missing_in_query", missing="audio")
    wrong = good._replace(support_inputs=dict(good.support_inputs, mask=jnp.ones((5, 3))))
    with pytest.raises(ValueError, match=r"support_inputs\['mask'\] has shape \(5, 3\)"):
        apply_condition(wrong, "both")
    with pytest.raises(ValueError, match=r"query_inputs\['mask'\] has shape \(2, 10\)"):
        modality_dropout(
            jax.random.PRNGKey(0),
            good._replace(query_inputs=dict(good.query_inputs, mask=jnp.ones((2, 10)))),
            rate=0.2,
        )
    off = good._replace(
        support_inputs=dict(good.support_inputs, mask=jnp.zeros((5, 2)).at[1:].set(1))
    )
    with pytest.raises(
        ValueError, match=r"1 samples with every modality off \(first at index \(0,\)\)"
    ):
        modality_dropout(jax.random.PRNGKey(0), off, rate=0.2)
    image_only = good._replace(support_inputs=jnp.zeros((5, 4, 4, 1)))
    with pytest.raises(ValueError, match="must be a dict"):
        apply_condition(image_only, "both")


# Property-based tests (hypothesis) over random masks. The leading shapes come from a small
# set, so that the eager ops compile once per shape; the mask values and rates are free.

MASK_SHAPES = [(1, 2), (6, 2), (2, 3, 2)]


@st.composite
def _masks(draw, *, allow_empty_rows=False):
    """A 0/1 float32 mask [..., samples, 2]; without ``allow_empty_rows`` no sample is all off."""
    shape = draw(st.sampled_from(MASK_SHAPES))
    rows = [(1.0, 1.0), (1.0, 0.0), (0.0, 1.0)] + ([(0.0, 0.0)] if allow_empty_rows else [])
    count = int(np.prod(shape[:-1]))
    picked = draw(st.lists(st.sampled_from(rows), min_size=count, max_size=count))
    return np.asarray(picked, np.float32).reshape(shape)


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(mask=_masks(), rate=st.floats(0.0, 0.5), seed=st.integers(0, 2**32 - 1))
def test_property_dropout_only_removes_and_never_empties_a_sample(mask, rate, seed):
    out = np.asarray(dropout_mask(jax.random.PRNGKey(seed), mask, rate=rate))
    assert out.shape == mask.shape and out.dtype == mask.dtype
    assert set(np.unique(out)) <= {0.0, 1.0}
    assert np.all(out <= mask), "dropout switched a missing modality on"
    assert np.all(out.sum(-1) >= 1), "a sample lost every modality"
    single = mask.sum(-1) == 1
    np.testing.assert_array_equal(out[single], mask[single])  # a lone modality is kept
    if rate == 0.0:
        np.testing.assert_array_equal(out, mask)


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(
    support=_masks(allow_empty_rows=True),
    query=_masks(allow_empty_rows=True),
    condition=st.sampled_from(CONDITIONS),
    missing=st.sampled_from(["image", "strokes"]),
)
def test_property_condition_is_mask_times_factor_or_a_clear_error(
    support, query, condition, missing
):
    episodes = make_episodes(support, query)
    support_factor, query_factor = condition_masks(condition, missing=missing)
    expected = {"support_inputs": support * support_factor, "query_inputs": query * query_factor}
    # The error names the first set with a sample that has nothing: the given masks are
    # checked first (support, then query), then the masks the condition leaves.
    given = {"support_inputs": support, "query_inputs": query}
    for where, mask in [(w, given[w]) for w in given] + [(w, expected[w]) for w in expected]:
        off = mask.sum(-1) == 0
        if off.any():
            first = tuple(int(i) for i in np.argwhere(off)[0])
            with pytest.raises(
                ValueError,
                match=(
                    rf"{where}\['mask'\] has {int(off.sum())} samples with every modality off "
                    rf"\(first at index {re.escape(str(first))}\)"
                ),
            ):
                apply_condition(episodes, condition, missing=missing)
            return
    out = apply_condition(episodes, condition, missing=missing)
    np.testing.assert_array_equal(out.support_inputs["mask"], expected["support_inputs"])
    np.testing.assert_array_equal(out.query_inputs["mask"], expected["query_inputs"])
    assert out.support_inputs["image"] is episodes.support_inputs["image"]
