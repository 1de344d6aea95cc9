"""Relation Network, Omniglot 5-way 1-shot (Sung et al. 2018: MSE on one-hot targets, Adam 1e-3);
sizes as omniglot_maml_5w1s. Set relationnet.objective='triplet' for the ranking loss."""

import ml_collections

from mmjax.configs import omniglot_maml_5w1s


def get_config() -> ml_collections.ConfigDict:
    config = omniglot_maml_5w1s.get_config()
    del config.maml
    config.algorithm = "relationnet"
    config.relationnet = ml_collections.ConfigDict(dict(objective="mse", hidden_sizes=(8,)))
    return config
