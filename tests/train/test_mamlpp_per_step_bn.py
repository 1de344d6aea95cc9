"""MAML++ with per-step batch norm through its config: trains, checkpoints, restores, evaluates."""

import jax
import numpy as np
import pytest

from mmjax import configs
from mmjax.train import loop
from mmjax.train.restore import evaluate_checkpoint, load_run

TINY = [
    "mamlpp.per_step_bn=True",  # as `mmjax train --set mamlpp.per_step_bn=True`
    "mamlpp.num_inner_steps=2",
    "mamlpp.first_order_until=0",
    "model.features=4",
    "model.num_blocks=2",
    "meta_batch_size=2",
    "queries=1",
    "num_steps=2",
    "checkpoint_every=2",
    "log_every=1",
    "eval_every=1000",
    "val_episodes=2",
    "test_episodes=4",
    "eval_batch_size=2",
]


def test_per_step_bn_config_trains_restores_and_evaluates(tmp_path):
    assert configs.get_config("omniglot_mamlpp_5w1s").mamlpp.per_step_bn is False
    config = configs.apply_overrides(configs.get_config("omniglot_mamlpp_5w1s"), TINY)
    results = loop.train(config, tmp_path, progress=False)
    assert results["steps"] == 2 and 0.0 <= results["test_accuracy"] <= 1.0
    restored_config, _, _, state = load_run(tmp_path)
    assert restored_config.mamlpp.per_step_bn is True and int(state.step) == 2
    params = jax.device_get(state.params)
    copies = params["per_step_bn"]["params"]["encoder"]
    own = params["model"]["params"]["encoder"]
    assert sorted(copies) == ["BatchStatNorm_0", "BatchStatNorm_1"]  # one per Conv-4 block
    for block in copies:
        for name, init in (("scale", 1.0), ("bias", 0.0)):
            # The copies start as the model's own leaf (ones, zeros); that leaf is replaced by
            # the copies in every forward pass, so its gradient is zero and Adam leaves it.
            np.testing.assert_array_equal(own[block][name], init)
            assert copies[block][name].shape == (3, 4)  # num_inner_steps + 1 copies of [C]
            moved = np.abs(copies[block][name] - init).max(axis=1)
            assert np.all(moved > 1e-4), (block, name, moved)  # every copy is meta-learned
    again = evaluate_checkpoint(tmp_path, num_episodes=4)
    assert again["step"] == 2
    np.testing.assert_allclose(again["accuracy"], results["test_accuracy"], rtol=1e-6)


def test_per_step_bn_without_batch_norm_is_a_clear_error(tmp_path):
    config = configs.apply_overrides(
        configs.get_config("omniglot_mamlpp_5w1s"), TINY + ["model.encoder='mlp'"]
    )
    with pytest.raises(
        ValueError,
        match=r"config\.mamlpp: per_step_bn needs a model with batch-norm parameters .*"
        r"\(model\.encoder='mlp'\)",
    ):
        loop.train(config, tmp_path, progress=False)
