"""First-order MAML (FOMAML), Omniglot 5-way 1-shot; otherwise as omniglot_maml_5w1s."""

import ml_collections

from mmjax.configs import omniglot_maml_5w1s


def get_config() -> ml_collections.ConfigDict:
    config = omniglot_maml_5w1s.get_config()
    config.maml.first_order = True
    return config
