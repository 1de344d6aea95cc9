"""MMAML (task-encoder FiLM modulation + MAML), Omniglot 20-way 1-shot; MAML's 20-way settings."""

import ml_collections

from mmjax.configs import omniglot_maml_20w1s


def get_config() -> ml_collections.ConfigDict:
    config = omniglot_maml_20w1s.get_config()
    config.algorithm = "mmaml"
    config.mmaml = ml_collections.ConfigDict(config.maml.to_dict())
    del config.mmaml.remat
    config.mmaml.task_hidden_sizes = (64,)
    del config.maml
    return config
