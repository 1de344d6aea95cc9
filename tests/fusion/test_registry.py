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
DIMS = (3, 5, 2)
BATCH = 5
# Every sample has a modality present; every modality is masked for some sample.
MASK = np.array(
    [[1, 0, 1, 1, 0],
     [1, 1, 0, 1, 1],
     [0, 1, 1, 1, 0]], dtype=bool)


def make_features(seed: int, dims=DIMS, batch=BATCH) -> list[jax.Array]:
  rng = np.random.default_rng(seed)
  return [jnp.asarray(rng.normal(size=(batch, d)), jnp.float32) for d in dims]


def random_params(module, features, mask, seed: int = 1):
  """Random normal parameters of the module's shapes (numpy: no per-shape PRNG compiles)."""
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), features, mask)
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.5, s.shape), s.dtype), shapes)


def corrupt_masked(features, mask, seed: int, mode: str) -> list[jax.Array]:
  """Replaces the masked rows by random values, or by NaN / +inf / -inf."""
  out = []
  for m, x in enumerate(make_features(seed, [x.shape[1] for x in features], features[0].shape[0])):
    if mode == "nonfinite":
      x = jnp.asarray(np.resize(np.array([np.nan, np.inf, -np.inf], np.float32), x.shape))
    out.append(jnp.where(jnp.asarray(mask[m])[:, None], features[m], 1e3 * x))
  return out


@functools.lru_cache(maxsize=None)
def module_and_params(name: str):
  module = make_fusion(name, **KWARGS[name])
  return module, random_params(module, make_features(0), MASK)


@functools.lru_cache(maxsize=None)
def jitted_apply(name: str):
  return jax.jit(module_and_params(name)[0].apply)


def test_kwargs_cover_registry():
  assert set(KWARGS) == set(FUSION_METHODS)


class FusionContractTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(*NAMES)
  def test_shape_and_masked_modality_has_no_influence(self, name):
    module, params = module_and_params(name)
    apply = self.variant(module.apply)
    features = make_features(0)
    reference = apply(params, features, MASK)
    chex.assert_shape(reference, (BATCH, OUT))
    chex.assert_tree_all_finite(reference)
    for seed, mode in [(5, "random"), (6, "nonfinite")]:
      corrupted = corrupt_masked(features, MASK, seed, mode)
      np.testing.assert_array_equal(apply(params, corrupted, MASK), reference)
    # ... while changing a present modality does change the output.
    changed = [x + 1.0 for x in features]
    assert not np.allclose(apply(params, changed, MASK), reference)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(*NAMES)
  def test_gradient_is_exactly_zero_for_masked_inputs(self, name):
    module, params = module_and_params(name)
    cotangent = jnp.asarray(np.random.default_rng(3).normal(size=(BATCH, OUT)), jnp.float32)

    def scalar(features):
      return jnp.sum(module.apply(params, features, MASK) * cotangent)

    features = corrupt_masked(make_features(0), MASK, 6, "nonfinite")
    grads = self.variant(jax.grad(scalar))(features)
    for m, grad in enumerate(grads):
      grad = np.asarray(grad)
      assert np.all(np.isfinite(grad)), (name, m)
      np.testing.assert_array_equal(grad[~MASK[m]], 0.0)
      assert np.all(np.any(grad[MASK[m]] != 0, axis=-1)), (name, m, grad)

  @parameterized.parameters(*NAMES)
  def test_all_masked_sample(self, name):
    module, params = module_and_params(name)
    mask = MASK.copy()
    mask[:, 2] = False
    features = corrupt_masked(make_features(0), mask, 6, "nonfinite")
    # Traced: the values of the mask are unknown, the row is zeros (never NaN).
    out = jitted_apply(name)(params, features, mask)
    chex.assert_tree_all_finite(out)
    np.testing.assert_array_equal(out[2], 0.0)
    # Concrete: an error.
    with pytest.raises(ValueError, match=r"every modality masked: \[2\]"):
      module.apply(params, features, mask)
    with pytest.raises(ValueError, match="every modality masked"):
      fusion.check_mask(mask)

  @parameterized.parameters(*NAMES)
  def test_wrong_mask_shape(self, name):
    module, params = module_and_params(name)
    with pytest.raises(ValueError, match=r"mask has shape \(5, 3\).*\(3, 5\)"):
      module.apply(params, make_features(0), MASK.T)
    with pytest.raises(ValueError, match=r"mask has shape \(3,\)"):
      jitted_apply(name)(params, make_features(0), MASK[:, 0])

  @parameterized.parameters(*NAMES)
  def test_float_mask_equals_bool_mask(self, name):
    module, params = module_and_params(name)
    features = make_features(0)
    np.testing.assert_array_equal(
        module.apply(params, features, MASK.astype(np.float32)),
        module.apply(params, features, MASK),
    )

  @parameterized.parameters(*NAMES)
  def test_vmap_over_tasks_with_per_task_params(self, name):
    module, params = module_and_params(name)
    tasks = 2
    task_params = jax.tree.map(lambda p: jnp.stack([p, 1.1 * p]), params)
    task_features = [jnp.stack([x, x + 1]) for x in make_features(0)]
    task_masks = jnp.stack([MASK, MASK[:, ::-1]])
    out = jax.jit(jax.vmap(module.apply))(task_params, task_features, task_masks)
    for t in range(tasks):
      expected = jitted_apply(name)(
          jax.tree.map(lambda p: p[t], task_params),
          [x[t] for x in task_features],
          task_masks[t],
      )
      np.testing.assert_allclose(out[t], expected, rtol=1e-5, atol=1e-5)


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(
    name=st.sampled_from(NAMES),
    mask=st.lists(
        st.lists(st.booleans(), min_size=len(DIMS), max_size=len(DIMS)),
        min_size=BATCH,
        max_size=BATCH,
    ),
    seed=st.integers(0, 2**16),
)
def test_random_masks(name, mask, seed):
  """Random masks (all-masked samples included, traced): finite, zero rows, no influence."""
  mask = np.array(mask).T
  module, params = module_and_params(name)
  apply = jitted_apply(name)
  features = make_features(seed)
  out = apply(params, features, mask)
  chex.assert_shape(out, (BATCH, OUT))
  chex.assert_tree_all_finite(out)
  np.testing.assert_array_equal(out[~mask.any(axis=0)], 0.0)
  corrupted = corrupt_masked(features, mask, seed + 1, "nonfinite")
  np.testing.assert_array_equal(apply(params, corrupted, mask), out)


@hypothesis.settings(max_examples=10, deadline=None)
@hypothesis.given(
    dims=st.lists(st.integers(1, 3), min_size=2, max_size=3),
    batch=st.integers(1, 3),
    data=st.data(),
)
def test_random_shapes(dims, batch, data):
  """Random modality counts, widths and batches (gated fusion): shape and no influence."""
  mask = np.array(
      data.draw(
          st.lists(
              st.lists(st.booleans(), min_size=len(dims), max_size=len(dims)).filter(any),
              min_size=batch,
              max_size=batch,
          )
      )
  ).T
  module = make_fusion("gated", features_out=OUT)
  features = make_features(batch, dims, batch)
  params = random_params(module, features, mask)
  out = module.apply(params, features, mask)
  chex.assert_shape(out, (batch, OUT))
  chex.assert_tree_all_finite(out)
  corrupted = corrupt_masked(features, mask, 7, "nonfinite")
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
