"""MMAML (task-encoder FiLM modulation + MAML), Omniglot 5-way 1-shot; MAML's settings otherwise."""

import ml_collections

from mmjax.configs import omniglot_maml_5w1s


def get_config() -> ml_collections.ConfigDict:
    config = omniglot_maml_5w1s.get_config()
    config.algorithm = "mmaml"
    config.mmaml = ml_collections.ConfigDict(config.maml.to_dict())
    del config.mmaml.remat
    config.mmaml.task_hidden_sizes = (64,)
    del config.maml
    return config
