"""MMAML (task-encoder FiLM modulation + MAML), Omniglot 20-way 1-shot; MAML's 20-way settings."""

import ml_collections

from mmjax.configs import omniglot_maml_20w1s


def get_config() -> ml_collections.ConfigDict:
    config = omniglot_maml_20w1s.get_config()
    config.algorithm = "mmaml"
    maml_settings = ("inner_lr", "num_inner_steps", "eval_num_inner_steps", "first_order")
    config.mmaml = ml_collections.ConfigDict(
        {k: config.maml[k] for k in maml_settings + ("task_batching",)}
    )
    config.mmaml.task_hidden_sizes = (64,)
    del config.maml
    return config
