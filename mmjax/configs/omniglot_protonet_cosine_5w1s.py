"""Prototypical Networks with cosine similarity × a learned scale (init 10), Omniglot 5-way 1-shot."""

import ml_collections

from mmjax.configs import omniglot_protonet_5w1s


def get_config() -> ml_collections.ConfigDict:
    config = omniglot_protonet_5w1s.get_config()
    config.protonet.distance = "cosine"
    config.protonet.scale = 10.0
    config.protonet.learn_scale = True
    return config
