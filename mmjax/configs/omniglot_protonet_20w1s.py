"""Prototypical Networks (squared Euclidean), Omniglot 20-way 1-shot; sizes as omniglot_maml_20w1s."""

import ml_collections

from mmjax.configs import omniglot_maml_20w1s, omniglot_protonet_5w1s


def get_config() -> ml_collections.ConfigDict:
    config = omniglot_maml_20w1s.get_config()
    del config.maml
    config.algorithm = "protonet"
    config.protonet = omniglot_protonet_5w1s.get_config().protonet
    return config
