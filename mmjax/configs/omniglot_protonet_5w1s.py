"""Prototypical Networks (squared Euclidean), Omniglot 5-way 1-shot (Snell et al. 2017: Adam 1e-3);
sizes as omniglot_maml_5w1s."""

import ml_collections

from mmjax.configs import omniglot_maml_5w1s


def get_config() -> ml_collections.ConfigDict:
    config = omniglot_maml_5w1s.get_config()
    del config.maml
    config.algorithm = "protonet"
    config.protonet = ml_collections.ConfigDict(
        dict(distance="euclidean", scale=1.0, learn_scale=False)
    )
    return config
