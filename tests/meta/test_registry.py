"""The algorithm registry and the per-algorithm Omniglot configs."""

import jax
import pytest

import mmjax.meta
from mmjax import configs
from mmjax.meta import available_learners, make_learner
from mmjax.nn.classifier import Classifier
from mmjax.nn.mlp import MLP
from mmjax.train import builders

ALGORITHMS = ("reptile", "metasgd", "anil", "protonet", "relationnet", "mmaml")
CONFIG_NAMES = ALGORITHMS + ("protonet_cosine",)


def test_all_algorithms_registered_on_import():
    assert set(ALGORITHMS) | {"maml"} <= set(available_learners())
    for name in ("reptile_learner", "metasgd_learner", "anil_learner", "protonet_learner"):
        assert name in mmjax.meta.__all__


def test_unknown_algorithm_lists_valid_ones():
    model = Classifier(MLP((4,)), num_classes=2)
    with pytest.raises(
        ValueError,
        match=r"unknown algorithm 'protonets' \(did you mean 'protonet'\?\); valid: .*anil.*maml.*mmaml.*relationnet.*reptile",
    ):
        make_learner("protonets", model)


@pytest.mark.parametrize("name", CONFIG_NAMES)
@pytest.mark.parametrize("ways", [5, 20])
def test_configs_build_their_learner(name, ways):
    config = configs.get_config(f"omniglot_{name}_{ways}w1s")
    assert config.ways == ways and config.shots == 1
    assert config.algorithm in config and "maml" not in config
    learner = builders.build_learner(config, builders.build_model(config))
    assert learner.name == name
    x = jax.numpy.zeros((ways, 28, 28, 1))
    shapes = jax.eval_shape(learner.init, jax.random.key(0), x)
    assert jax.tree.leaves(shapes)


def test_bad_setting_names_the_config_section():
    config = configs.apply_overrides(
        configs.get_config("omniglot_protonet_5w1s"), ["protonet.distance='l2'"]
    )
    with pytest.raises(ValueError, match=r"config.protonet: distance='l2' is not one of"):
        builders.build_learner(config, builders.build_model(config))
