"""ANIL (head-only inner loop), Omniglot 5-way 1-shot; MAML's settings otherwise."""

import ml_collections

from mmjax.configs import omniglot_maml_5w1s


def get_config() -> ml_collections.ConfigDict:
    config = omniglot_maml_5w1s.get_config()
    config.algorithm = "anil"
    config.anil = ml_collections.ConfigDict(
        {k: config.maml[k] for k in ("inner_lr", "num_inner_steps", "eval_num_inner_steps")}
    )
    config.anil.first_order = False
    del config.maml
    return config
