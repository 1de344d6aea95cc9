"""MMAML regression protocol, 2-mode mixture, 5-shot; otherwise as regression_5modes_5shot."""

import ml_collections

from mmjax.configs import regression_5modes_5shot


def get_config() -> ml_collections.ConfigDict:
    config = regression_5modes_5shot.get_config()
    config.num_modes = 2
    return config
