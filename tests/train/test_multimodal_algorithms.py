"""Every algorithm trains on image + stroke episodes through its omniglot_mm_* config."""

import jax
import numpy as np
import pytest

from mmjax import configs
from mmjax.train import loop

ALGORITHMS = ("reptile", "metasgd", "anil", "protonet", "protonet_cosine", "relationnet", "mmaml")
TINY = [
    "model.features=8",
    "model.fusion_features=8",
    "model.stroke_features=8",
    "meta_batch_size=2",
    "queries=2",
    "modality_dropout=0.25",
]


@pytest.mark.parametrize("ways", [5, 20])
def test_multimodal_configs_exist_for_every_algorithm(ways):
    for algorithm in ALGORITHMS:
        config = configs.get_config(f"omniglot_mm_{algorithm}_{ways}w1s")
        image = configs.get_config(f"omniglot_{algorithm}_{ways}w1s")
        assert config.model.encoder == "multimodal"
        assert tuple(config.data.modalities) == ("image", "strokes")
        assert config.algorithm == image.algorithm and config.ways == image.ways == ways
        assert config[config.algorithm].to_dict() == image[image.algorithm].to_dict()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_multimodal_meta_step_is_finite_and_moves_parameters(algorithm):
    config = configs.apply_overrides(configs.get_config(f"omniglot_mm_{algorithm}_5w1s"), TINY)
    splits, learner, optimizer, state = loop.build_run(config)
    before = jax.device_get(state.params)
    step = loop.make_train_step(config, learner, optimizer)
    state, metrics = step(state, splits["train"])
    assert bool(metrics["finite"]) and np.isfinite(float(metrics["loss"]))
    after = jax.device_get(state.params)
    moved = [
        not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after))
    ]
    assert any(moved)
