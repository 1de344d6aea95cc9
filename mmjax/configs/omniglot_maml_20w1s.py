"""Second-order MAML, Omniglot 20-way 1-shot (Finn et al. 2017: inner lr 0.1, 5 steps)."""

import ml_collections

from mmjax.configs import omniglot_maml_5w1s


def get_config() -> ml_collections.ConfigDict:
    config = omniglot_maml_5w1s.get_config()
    config.ways = 20
    config.queries = 5
    config.meta_batch_size = 16
    config.maml.inner_lr = 0.1
    config.maml.num_inner_steps = 5
    config.maml.eval_num_inner_steps = 5
    return config
