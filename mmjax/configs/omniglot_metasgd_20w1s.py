"""Meta-SGD, Omniglot 20-way 1-shot; sizes and initial inner rate as omniglot_maml_20w1s."""

import ml_collections

from mmjax.configs import omniglot_maml_20w1s, omniglot_metasgd_5w1s


def get_config() -> ml_collections.ConfigDict:
    config = omniglot_maml_20w1s.get_config()
    del config.maml
    config.algorithm = "metasgd"
    config.metasgd = omniglot_metasgd_5w1s.get_config().metasgd
    config.metasgd.inner_lr = 0.1
    return config
