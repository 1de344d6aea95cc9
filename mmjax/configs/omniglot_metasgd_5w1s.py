"""Meta-SGD, Omniglot 5-way 1-shot (Li et al. 2017: one inner step, learned per-parameter rates);
otherwise as omniglot_maml_5w1s."""

import ml_collections

from mmjax.configs import omniglot_maml_5w1s


def get_config() -> ml_collections.ConfigDict:
    config = omniglot_maml_5w1s.get_config()
    del config.maml
    config.algorithm = "metasgd"
    config.metasgd = ml_collections.ConfigDict(
        dict(inner_lr=0.4, num_inner_steps=1, eval_num_inner_steps=1, first_order=False)
    )
    return config
