"""ANIL (head-only inner loop), Omniglot 20-way 1-shot; MAML's 20-way settings otherwise."""

import ml_collections

from mmjax.configs import omniglot_maml_20w1s


def get_config() -> ml_collections.ConfigDict:
    config = omniglot_maml_20w1s.get_config()
    config.algorithm = "anil"
    config.anil = ml_collections.ConfigDict(
        {k: config.maml[k] for k in ("inner_lr", "num_inner_steps", "eval_num_inner_steps")}
    )
    config.anil.first_order = False
    del config.maml
    return config
