"""Per-step batch-norm copies: which leaves are batch norm's, their copies, and the errors."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.meta import maml_plus_plus, per_step_bn
from mmjax.nn import Classifier, Conv4

STEPS, WAYS = 3, 3


def test_conv4_batch_norm_leaves_include_the_fused_first_block():
    model = Classifier(Conv4(features=2, num_blocks=2), num_classes=WAYS)
    params = model.init(jax.random.key(0), jnp.zeros((2, 6, 6, 1)))
    copies = per_step_bn.init_per_step_bn(params, num_steps=STEPS)["params"]["encoder"]
    assert sorted(copies) == ["BatchStatNorm_0", "BatchStatNorm_1"]  # the fused block first
    chex.assert_shape(jax.tree.leaves(copies), (STEPS + 1, 2))
    bumped = jax.tree.map(lambda c: c[0] + 1.0, {"params": {"encoder": copies}})
    replaced = per_step_bn.with_batch_norm(params, bumped)
    for block in ("BatchStatNorm_0", "BatchStatNorm_1"):
        for name in ("scale", "bias"):
            original = params["params"]["encoder"][block][name]
            np.testing.assert_array_equal(replaced["params"]["encoder"][block][name], original + 1)
    chex.assert_trees_all_equal(replaced["params"]["head"], params["params"]["head"])


def test_only_scale_and_bias_of_batch_norm_modules_are_copied_and_copy_at_indexes_them():
    params = {
        "params": {
            "Dense_0": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)},  # not batch norm
            "BatchNorm_0": {"scale": jnp.asarray([1.0, 2.0]), "bias": jnp.asarray([3.0, 4.0])},
            "Block_0": {"BatchStatNorm_0": {"scale": jnp.asarray([5.0])}},
        }
    }
    leaves = per_step_bn.batch_norm_leaves(params)
    assert sorted(leaves) == [
        ("params", "BatchNorm_0", "bias"),
        ("params", "BatchNorm_0", "scale"),
        ("params", "Block_0", "BatchStatNorm_0", "scale"),
    ]
    copies = per_step_bn.init_per_step_bn(params, num_steps=1)
    steps = jnp.asarray([[0.0], [1.0]])
    copies = jax.tree.map(lambda c: c + steps, copies)  # copy k: the leaf + k
    last = per_step_bn.copy_at(copies, 1)
    np.testing.assert_array_equal(last["params"]["BatchNorm_0"]["bias"], [4.0, 5.0])
    np.testing.assert_array_equal(last["params"]["Block_0"]["BatchStatNorm_0"]["scale"], [6.0])
    assert per_step_bn.copy_at(None, 1) is None
    run = per_step_bn.with_batch_norm(params, last)
    np.testing.assert_array_equal(run["params"]["BatchNorm_0"]["scale"], [2.0, 3.0])
    chex.assert_trees_all_equal(run["params"]["Dense_0"], params["params"]["Dense_0"])
    per_step_bn.check_per_step_bn(copies, params, 1)  # the right shapes pass


def test_errors_name_the_argument_and_the_expected_value():
    bn = {"params": {"BatchStatNorm_0": {"scale": jnp.ones(4), "bias": jnp.zeros(4)}}}
    for bad in (-1, True, 1.0):
        with pytest.raises(
            ValueError, match=re.escape(f"num_steps must be an int >= 0; got {bad!r}")
        ):
            per_step_bn.init_per_step_bn(bn, num_steps=bad)
    with pytest.raises(ValueError, match="per_step_bn needs a model with batch-norm parameters"):
        per_step_bn.init_per_step_bn({"params": {"Dense_0": {"bias": jnp.zeros(2)}}}, num_steps=1)
    with pytest.raises(ValueError, match="per_step_bn must be nested dicts .* got list"):
        per_step_bn.check_per_step_bn([jnp.ones((2, 4))], bn, 1)
    with pytest.raises(ValueError, match=re.escape("has shape (2, 4); expected (3, 4)")):
        per_step_bn.check_per_step_bn(per_step_bn.init_per_step_bn(bn, num_steps=1), bn, 2)


def test_the_helpers_are_still_importable_from_maml_plus_plus():
    for name in ("BATCH_NORM_MODULES", "batch_norm_leaves", "init_per_step_bn", "with_batch_norm"):
        assert getattr(maml_plus_plus, name) is getattr(per_step_bn, name)
