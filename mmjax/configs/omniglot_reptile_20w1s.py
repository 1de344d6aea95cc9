"""Reptile, Omniglot 20-way 1-shot (Nichol et al. 2018: 10 inner steps); sizes as omniglot_maml_20w1s."""

import ml_collections

from mmjax.configs import omniglot_maml_20w1s, omniglot_reptile_5w1s


def get_config() -> ml_collections.ConfigDict:
    config = omniglot_maml_20w1s.get_config()
    five_way = omniglot_reptile_5w1s.get_config()
    del config.maml
    config.algorithm = "reptile"
    config.reptile = five_way.reptile
    config.reptile.num_inner_steps = 10
    config.optimizer = five_way.optimizer
    config.meta_batch_size = five_way.meta_batch_size
    return config
