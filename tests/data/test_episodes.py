"""Tests for mmjax.data.episodes: on-device episode sampling."""

import functools

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.data import episodes

NUM_CLASSES, NUM_EXAMPLES = 12, 10
# One episode spec for most tests, so that they share compilations (the CPU is slow to compile).
SPEC = dict(ways=5, shots=2, queries=3)
BATCH = 200


def _coded_data(num_classes=NUM_CLASSES, num_examples=NUM_EXAMPLES):
    """[classes, examples, 2, 2, 1] whose every pixel is 1000 * class + example."""
    codes = 1000 * np.arange(num_classes)[:, None] + np.arange(num_examples)[None, :]
    return jnp.asarray(
        np.broadcast_to(codes[:, :, None, None, None], codes.shape + (2, 2, 1)), jnp.float32
    )


def _codes(inputs):
    """[n, 2, 2, 1] coded images -> (class ids [n], example ids [n])."""
    codes = np.asarray(inputs).reshape(inputs.shape[0], -1)
    assert (codes == codes[:, :1]).all()
    return codes[:, 0].astype(int) // 1000, codes[:, 0].astype(int) % 1000


def _check_episode(episode, ways, shots, queries):
    chex.assert_shape(episode.support_inputs, (ways * shots, 2, 2, 1))
    chex.assert_shape(episode.query_inputs, (ways * queries, 2, 2, 1))
    chex.assert_shape(episode.support_labels, (ways * shots,))
    chex.assert_shape(episode.query_labels, (ways * queries,))
    assert episode.support_labels.dtype == jnp.int32 and episode.query_labels.dtype == jnp.int32
    support_labels, query_labels = (
        np.asarray(episode.support_labels),
        np.asarray(episode.query_labels),
    )
    np.testing.assert_array_equal(np.bincount(support_labels, minlength=ways), [shots] * ways)
    np.testing.assert_array_equal(np.bincount(query_labels, minlength=ways), [queries] * ways)
    np.testing.assert_array_equal(support_labels, np.repeat(np.arange(ways), shots))  # Class-major.
    support_class, support_example = _codes(episode.support_inputs)
    query_class, query_example = _codes(episode.query_inputs)
    chosen = []
    for label in range(ways):
        classes = set(support_class[support_labels == label]) | set(
            query_class[query_labels == label]
        )
        assert len(classes) == 1  # Support and query of label i come from one class.
        chosen.append(classes.pop())
        examples = list(support_example[support_labels == label]) + list(
            query_example[query_labels == label]
        )
        assert len(set(examples)) == shots + queries  # Distinct examples.
    assert len(set(chosen)) == ways  # Distinct classes.
    return chosen


class SampleEpisodeTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_episode_structure(self):
        sample = self.variant(functools.partial(episodes.sample_episode, **SPEC))
        data = _coded_data()
        for seed in range(5):
            _check_episode(sample(jax.random.PRNGKey(seed), data), **SPEC)


def test_deterministic_for_a_key_and_varies_across_keys():
    data = _coded_data()
    first = episodes.sample_episode(jax.random.PRNGKey(0), data, **SPEC)
    again = episodes.sample_episode(jax.random.PRNGKey(0), data, **SPEC)
    other = episodes.sample_episode(jax.random.PRNGKey(1), data, **SPEC)
    chex.assert_trees_all_equal(first, again)
    assert not np.array_equal(first.support_inputs, other.support_inputs)


def test_labels_are_a_random_permutation_of_classes():
    data = _coded_data()
    batch = episodes.sample_episodes(jax.random.PRNGKey(3), data, batch_size=BATCH, **SPEC)
    class_of_label0 = np.asarray(batch.support_inputs[:, 0, 0, 0, 0]).astype(int) // 1000
    assert len(set(class_of_label0)) == NUM_CLASSES  # Every class gets label 0 sometimes.
    assert (
        np.bincount(class_of_label0, minlength=NUM_CLASSES).max() < 40
    )  # Roughly uniform (mean 16.7).
    # Label order is not the class order.
    classes = np.asarray(batch.support_inputs[:, :, 0, 0, 0]).astype(int) // 1000
    assert (np.diff(classes, axis=1) < 0).any()


def test_all_examples_used_over_many_episodes():
    data = _coded_data()
    batch = episodes.sample_episodes(jax.random.PRNGKey(7), data, batch_size=BATCH, **SPEC)
    examples = np.asarray(batch.query_inputs[..., 0, 0, 0]).astype(int) % 1000
    assert set(examples.ravel()) == set(range(NUM_EXAMPLES))


def test_sample_episodes_batches_independent_episodes():
    data = _coded_data()
    batch = episodes.sample_episodes(jax.random.PRNGKey(0), data, batch_size=BATCH, **SPEC)
    chex.assert_shape(batch.support_inputs, (BATCH, 10, 2, 2, 1))
    chex.assert_shape(batch.query_labels, (BATCH, 15))
    chosen = []
    for i in range(6):
        chosen.append(tuple(_check_episode(jax.tree.map(lambda x, i=i: x[i], batch), **SPEC)))
    assert len(set(chosen)) > 1
    # Oracle: episode i is sample_episode with the i-th split key.
    keys = jax.random.split(jax.random.PRNGKey(0), BATCH)
    for i in (0, 2, BATCH - 1):
        single = episodes.sample_episode(keys[i], data, **SPEC)
        chex.assert_trees_all_equal(single, jax.tree.map(lambda x, i=i: x[i], batch))


def test_works_under_vmap_and_jit():
    data = _coded_data()
    keys = jax.random.split(jax.random.PRNGKey(5), 4)

    @jax.jit
    def many(keys):
        return jax.vmap(lambda k: episodes.sample_episode(k, data, **SPEC))(keys)

    batch = many(keys)
    chex.assert_shape(batch.support_inputs, (4, 10, 2, 2, 1))
    for i in range(4):
        chex.assert_trees_all_equal(
            jax.tree.map(lambda x, i=i: x[i], batch), episodes.sample_episode(keys[i], data, **SPEC)
        )


def test_dict_pytree_uses_the_same_indices_for_every_leaf():
    image = _coded_data()
    codes = image[:, :, 0, 0, 0]
    data = {
        "image": image,
        "strokes": jnp.broadcast_to(codes[:, :, None, None], (NUM_CLASSES, NUM_EXAMPLES, 7, 3)),
        "mask": (codes % 2)[..., None] * jnp.ones((1, 1, 2)),
    }
    episode = episodes.sample_episode(jax.random.PRNGKey(2), data, ways=4, shots=3, queries=2)
    chex.assert_shape(episode.support_inputs["strokes"], (12, 7, 3))
    chex.assert_shape(episode.query_inputs["mask"], (8, 2))
    for inputs in (episode.support_inputs, episode.query_inputs):
        image_codes = inputs["image"][:, 0, 0, 0]
        np.testing.assert_array_equal(inputs["strokes"][:, 3, 1], image_codes)
        np.testing.assert_array_equal(inputs["mask"][:, 1], image_codes % 2)


def test_tuple_pytree_of_two_leaves():
    data = (_coded_data(), _coded_data()[..., 0, 0, 0])
    episode = episodes.sample_episode(jax.random.PRNGKey(2), data, ways=2, shots=1, queries=1)
    np.testing.assert_array_equal(episode.support_inputs[0][:, 0, 0, 0], episode.support_inputs[1])


def test_full_usage_of_classes_and_examples():
    data = _coded_data(num_classes=3, num_examples=4)
    _check_episode(
        episodes.sample_episode(jax.random.PRNGKey(0), data, ways=3, shots=2, queries=2), 3, 2, 2
    )


def test_error_messages():
    data = _coded_data(num_classes=25, num_examples=20)
    with pytest.raises(ValueError, match="ways=30 exceeds the 25 classes available"):
        episodes.sample_episode(jax.random.PRNGKey(0), data, ways=30, shots=1, queries=1)
    with pytest.raises(
        ValueError, match=r"shots \+ queries = 25 .* exceeds the 20 examples per class"
    ):
        episodes.sample_episodes(
            jax.random.PRNGKey(0), data, batch_size=2, ways=5, shots=5, queries=20
        )
    with pytest.raises(ValueError, match="shots=0 must be an int >= 1"):
        episodes.validate_episode_spec(25, 20, ways=5, shots=0, queries=1)
    with pytest.raises(ValueError, match="queries=1.5 must be an int"):
        episodes.validate_episode_spec(25, 20, ways=5, shots=1, queries=1.5)
    with pytest.raises(ValueError, match="batch_size=0"):
        episodes.sample_episodes(
            jax.random.PRNGKey(0), data, batch_size=0, ways=5, shots=1, queries=1
        )
    episodes.validate_episode_spec(25, 20, ways=25, shots=10, queries=10)  # Exactly fits.


def test_leaf_errors_name_the_leaf():
    data = {"image": jnp.zeros((5, 4, 2)), "strokes": jnp.zeros((5, 3, 2))}
    with pytest.raises(ValueError, match=r"\['strokes'\] has \[classes, examples\] = \(5, 3\)"):
        episodes.sample_episode(jax.random.PRNGKey(0), data, ways=2, shots=1, queries=1)
    with pytest.raises(ValueError, match=r"\['label'\] has shape \(5,\)"):
        episodes.classes_and_examples({"image": jnp.zeros((5, 4)), "label": jnp.zeros(5)})


def test_to_device():
    from mmjax.data.omniglot import ClassImages

    images = ClassImages(
        np.ones((2, 3, 4, 4, 1), np.float32), ("a/b", "a/c"), np.zeros((2, 3), str)
    )
    assert isinstance(episodes.to_device(images), jax.Array)
    tree = episodes.to_device({"x": np.zeros((2, 3))})
    assert isinstance(tree["x"], jax.Array)


# Property-based tests (hypothesis). Every new shape costs the loaded CPU a compilation
# (about a second), so the valid specs come from a small set covering the edges (one way,
# every class, every example, one shot) and hypothesis varies the keys; invalid specs raise
# before tracing and are drawn from the whole range.

# (num_classes, num_examples, ways, shots, queries)
VALID_SPECS = [
    (1, 2, 1, 1, 1),  # one class, every example
    (5, 4, 5, 1, 3),  # every class and every example
    (7, 6, 3, 2, 2),
    (9, 5, 1, 3, 1),  # one way
    (12, 9, 6, 1, 8),
]


def _check_pair_episode(episode, num_classes, num_examples, ways, shots, queries):
    """Every documented property of one sampled episode of `_pair_data`."""
    support, query = episode.support_inputs, episode.query_inputs
    chex.assert_shape(support["code"], (ways * shots, 1, 1))
    chex.assert_shape(query["code"], (ways * queries, 1, 1))
    chex.assert_shape(support["pair"], (ways * shots, 2))
    chex.assert_shape(query["pair"], (ways * queries, 2))
    np.testing.assert_array_equal(episode.support_labels, np.repeat(np.arange(ways), shots))
    np.testing.assert_array_equal(episode.query_labels, np.repeat(np.arange(ways), queries))
    assert episode.support_labels.dtype == episode.query_labels.dtype == jnp.int32
    # Both leaves were gathered at the same (class, example) indices.
    for inputs in (support, query):
        code = np.asarray(inputs["code"]).reshape(-1)
        pair = np.asarray(inputs["pair"])
        np.testing.assert_array_equal(code, 1000 * pair[:, 0] + pair[:, 1])
    s_pair = np.asarray(support["pair"]).reshape(ways, shots, 2)
    q_pair = np.asarray(query["pair"]).reshape(ways, queries, 2)
    classes = s_pair[:, 0, 0]
    assert len(set(classes.tolist())) == ways  # distinct classes, one per label
    assert ((0 <= classes) & (classes < num_classes)).all()
    for label in range(ways):
        assert (s_pair[label, :, 0] == classes[label]).all()
        assert (q_pair[label, :, 0] == classes[label]).all()
        examples = np.concatenate([s_pair[label, :, 1], q_pair[label, :, 1]])
        assert len(set(examples.tolist())) == shots + queries  # support and query never overlap
        assert ((0 <= examples) & (examples < num_examples)).all()


def _pair_data(num_classes, num_examples):
    """Two leaves indexed alike: codes [C, E, 1, 1] = 1000 c + e and pairs [C, E, 2] = (c, e)."""
    c, e = np.meshgrid(np.arange(num_classes), np.arange(num_examples), indexing="ij")
    return {
        "code": jnp.asarray((1000 * c + e)[:, :, None, None], jnp.int32),
        "pair": jnp.asarray(np.stack([c, e], axis=-1), jnp.int32),
    }


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(spec=st.sampled_from(VALID_SPECS), seed=st.integers(0, 2**32 - 1))
def test_property_sample_episode(spec, seed):
    data = _pair_data(*spec[:2])
    ways, shots, queries = spec[2:]
    episode = episodes.sample_episode(
        jax.random.PRNGKey(seed), data, ways=ways, shots=shots, queries=queries
    )
    _check_pair_episode(episode, *spec)


@hypothesis.settings(max_examples=10, deadline=None)
@hypothesis.given(spec=st.sampled_from(VALID_SPECS[1:4]), seed=st.integers(0, 2**32 - 1))
def test_property_sample_episodes_batch(spec, seed):
    batch_size = 3
    data = _pair_data(*spec[:2])
    ways, shots, queries = spec[2:]
    batch = episodes.sample_episodes(
        jax.random.PRNGKey(seed),
        data,
        batch_size=batch_size,
        ways=ways,
        shots=shots,
        queries=queries,
    )
    chex.assert_shape(batch.support_labels, (batch_size, ways * shots))
    chex.assert_shape(batch.query_labels, (batch_size, ways * queries))
    for i in range(batch_size):
        _check_pair_episode(jax.tree.map(lambda x, i=i: x[i], batch), *spec)


@st.composite
def _invalid_specs(draw):
    """(num_classes, num_examples, ways, shots, queries, expected message) that must fail."""
    num_classes, num_examples = draw(st.integers(1, 12)), draw(st.integers(2, 9))
    kind = draw(st.sampled_from(["ways", "examples", "nonpositive"]))
    ways, shots, queries = 1, 1, 1
    if kind == "ways":
        ways = draw(st.integers(num_classes + 1, num_classes + 5))
        message = f"ways={ways} exceeds the {num_classes} classes available"
    elif kind == "examples":
        shots = draw(st.integers(1, num_examples))
        queries = draw(st.integers(max(1, num_examples - shots + 1), num_examples + 3))
        message = (
            rf"shots \+ queries = {shots + queries} \(shots={shots}, queries={queries}\) "
            f"exceeds the {num_examples} examples per class"
        )
    else:
        name = draw(st.sampled_from(["ways", "shots", "queries"]))
        value = draw(st.integers(-3, 0))
        ways, shots, queries = [value if n == name else 1 for n in ("ways", "shots", "queries")]
        message = f"{name}={value} must be an int >= 1"
    return num_classes, num_examples, ways, shots, queries, message


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(spec=_invalid_specs())
def test_property_invalid_specs_raise_before_tracing(spec):
    num_classes, num_examples, ways, shots, queries, message = spec
    data = _pair_data(num_classes, num_examples)
    with pytest.raises(ValueError, match=message):
        episodes.validate_episode_spec(
            num_classes, num_examples, ways=ways, shots=shots, queries=queries
        )
    with pytest.raises(ValueError, match=message):  # the jitted sampler refuses it too
        episodes.sample_episodes(
            jax.random.PRNGKey(0), data, batch_size=2, ways=ways, shots=shots, queries=queries
        )
