"""Prototypical Networks with cosine similarity × a learned scale (init 10), Omniglot 20-way 1-shot."""

import ml_collections

from mmjax.configs import omniglot_protonet_20w1s, omniglot_protonet_cosine_5w1s


def get_config() -> ml_collections.ConfigDict:
    config = omniglot_protonet_20w1s.get_config()
    config.protonet = omniglot_protonet_cosine_5w1s.get_config().protonet
    return config
