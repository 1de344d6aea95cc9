"""Properties every fusion method must have (parametrised over the registry), and the registry."""

import functools

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from mmjax import fusion
from mmjax.fusion import FUSION_METHODS, make_fusion
from tests.precision import float64, to_float64

OUT = 6
KWARGS = {
    "concat": dict(features_out=OUT),
    "late": dict(num_classes=OUT, weighting="learned"),
    "hybrid": dict(num_classes=OUT),
    "attention": dict(features_out=OUT),
    "cross_attention": dict(num_heads=2, features_out=OUT),
    "tensor": dict(features_out=OUT),
    "low_rank_tensor": dict(features_out=OUT, rank=3),
    "gated": dict(features_out=OUT),
    "film": dict(features_out=OUT),
}
NAMES = sorted(FUSION_METHODS)


@pytest.fixture(scope="module")
def setups(fusion_inputs):
    """``setups(name) -> (module, params, jitted apply)``, built once per method."""

    @functools.lru_cache(maxsize=None)
    def setup(name: str):
        module = make_fusion(name, **KWARGS[name])
        params = fusion_inputs.random_params(module, fusion_inputs.features(), fusion_inputs.MASK)
        return module, params, jax.jit(module.apply)

    return setup


def test_kwargs_cover_registry():
    assert set(KWARGS) == set(FUSION_METHODS)


class FusionContractTest(chex.TestCase):
    @pytest.fixture(autouse=True)
    def _inject(self, setups, fusion_inputs):
        self.setup = setups
        self.inputs = fusion_inputs

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*((name, name) for name in NAMES))
    def test_shape_and_masked_modality_has_no_influence(self, name):
        module, params, _ = self.setup(name)
        apply = self.variant(module.apply)
        features, mask = self.inputs.features(), self.inputs.MASK
        reference = apply(params, features, mask)
        chex.assert_shape(reference, (self.inputs.BATCH, OUT))
        chex.assert_tree_all_finite(reference)
        for seed, mode in [(5, "random"), (6, "nonfinite")]:
            corrupted = self.inputs.corrupt_masked(features, mask, seed, mode)
            np.testing.assert_array_equal(apply(params, corrupted, mask), reference)
        # ... while changing a present modality does change the output.
        changed = [x + 1.0 for x in features]
        assert not np.allclose(apply(params, changed, mask), reference)

    @chex.variants(with_jit=True)  # The eager path is covered above; eager grads are slow.
    @parameterized.named_parameters(*((name, name) for name in NAMES))
    def test_gradient_is_exactly_zero_for_masked_inputs(self, name):
        module, params, _ = self.setup(name)
        mask = self.inputs.MASK
        cotangent = np.random.default_rng(3).normal(size=(self.inputs.BATCH, OUT))
        cotangent = jnp.asarray(cotangent, jnp.float32)

        def scalar(features):
            return jnp.sum(module.apply(params, features, mask) * cotangent)

        features = self.inputs.corrupt_masked(self.inputs.features(), mask, 6, "nonfinite")
        grads = self.variant(jax.grad(scalar))(features)
        for m, grad in enumerate(grads):
            grad = np.asarray(grad)
            assert np.all(np.isfinite(grad)), (name, m)
            np.testing.assert_array_equal(grad[~mask[:, m]], 0.0)
            assert np.all(np.any(grad[mask[:, m]] != 0, axis=-1)), (name, m, grad)

    @parameterized.named_parameters(*((name, name) for name in NAMES))
    def test_all_masked_sample(self, name):
        module, params, jitted = self.setup(name)
        mask = self.inputs.MASK.copy()
        mask[2] = False  # sample 2: no modality
        features = self.inputs.corrupt_masked(self.inputs.features(), mask, 6, "nonfinite")
        # Traced: the values of the mask are unknown, the row is zeros (never NaN).
        out = jitted(params, features, mask)
        chex.assert_tree_all_finite(out)
        np.testing.assert_array_equal(out[2], 0.0)
        # Concrete: an error.
        with pytest.raises(ValueError, match=r"every modality masked: \[2\]"):
            module.apply(params, features, mask)
        with pytest.raises(ValueError, match="every modality masked"):
            fusion.common.check_mask(mask)

    @parameterized.named_parameters(*((name, name) for name in NAMES))
    def test_wrong_mask_shape(self, name):
        module, params, jitted = self.setup(name)
        features, mask = self.inputs.features(), self.inputs.MASK
        message = r"mask has shape \(3, 5\); expected \[B, M\].*\[5, 3\].*modality-first"
        with pytest.raises(ValueError, match=message):
            module.apply(params, features, mask.T)
        with pytest.raises(ValueError, match=r"mask has shape \(5,\)"):
            jitted(params, features, mask[:, 0])

    @parameterized.named_parameters(*((name, name) for name in NAMES))
    def test_vmap_over_tasks_with_per_task_params_and_float_mask(self, name):
        module, params, jitted = self.setup(name)
        tasks = 2
        with float64():  # an exactness claim (vmap equals a loop): compared in float64
            params = to_float64(params)
            task_params = jax.tree.map(lambda p: jnp.stack([p, 1.1 * p]), params)
            task_features = [jnp.stack([x, x + 1]) for x in to_float64(self.inputs.features())]
            task_masks = np.stack([self.inputs.MASK, self.inputs.MASK[::-1]])
            out = jax.jit(jax.vmap(module.apply))(
                task_params, task_features, task_masks.astype(np.float64)
            )
            assert out.dtype == jnp.float64
            for t in range(tasks):
                expected = jitted(
                    jax.tree.map(lambda p, t=t: p[t], task_params),
                    [x[t] for x in task_features],
                    task_masks[t],
                )
                np.testing.assert_allclose(out[t], expected, rtol=1e-10, atol=1e-12)


BATCH = 5  # = FusionInputs.BATCH
NUM_MODALITIES = 3  # = len(FusionInputs.DIMS)


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(
    name=st.sampled_from(NAMES),
    mask=st.lists(
        st.lists(st.booleans(), min_size=NUM_MODALITIES, max_size=NUM_MODALITIES),
        min_size=BATCH,
        max_size=BATCH,
    ),
    seed=st.integers(0, 2**16),
)
def test_random_masks(setups, fusion_inputs, name, mask, seed):
    """Random masks (all-masked samples included, traced): finite, zero rows, no influence."""
    mask = np.array(mask)  # [B, M]
    _, params, jitted = setups(name)
    features = fusion_inputs.features(seed)
    out = jitted(params, features, mask)
    chex.assert_shape(out, (BATCH, OUT))
    chex.assert_tree_all_finite(out)
    np.testing.assert_array_equal(out[~mask.any(axis=1)], 0.0)
    corrupted = fusion_inputs.corrupt_masked(features, mask, seed + 1, "nonfinite")
    np.testing.assert_array_equal(jitted(params, corrupted, mask), out)


@hypothesis.settings(max_examples=5, deadline=None)
@hypothesis.given(
    name=st.sampled_from(NAMES),
    dims=st.lists(st.integers(1, 3), min_size=2, max_size=3),
    batch=st.integers(1, 3),
    data=st.data(),
)
def test_random_shapes(fusion_inputs, name, dims, batch, data):
    """Random modality counts, widths and batches: shape, finiteness and no influence."""
    mask = np.array(
        data.draw(
            st.lists(
                st.lists(st.booleans(), min_size=len(dims), max_size=len(dims)).filter(any),
                min_size=batch,
                max_size=batch,
            )
        )
    )  # [B, M]
    module = make_fusion(name, **KWARGS[name])
    features = fusion_inputs.features(batch, dims, batch)
    params = fusion_inputs.random_params(module, features, mask)
    out = module.apply(params, features, mask)
    chex.assert_shape(out, (batch, OUT))
    chex.assert_tree_all_finite(out)
    corrupted = fusion_inputs.corrupt_masked(features, mask, 7, "nonfinite")
    np.testing.assert_array_equal(module.apply(params, corrupted, mask), out)


def test_make_fusion_builds_registered_class():
    module = make_fusion("attention", features_out=4, scalar=True)
    assert isinstance(module, fusion.AttentionFusion)
    assert module.features_out == 4 and module.scalar


def test_make_fusion_unknown_name_lists_valid_names_and_closest():
    with pytest.raises(ValueError) as error:
        make_fusion("atention", features_out=4)
    message = str(error.value)
    assert "'atention'" in message
    assert "Did you mean 'attention'?" in message
    for name in FUSION_METHODS:
        assert repr(name) in message
