"""MAML, Omniglot 5-way 1-shot, images + pen strokes with ``film`` fusion.

omniglot_mm_maml_5w1s with ``model.fusion="film"``.
"""

import ml_collections

from mmjax.configs import omniglot_mm_maml_5w1s


def get_config() -> ml_collections.ConfigDict:
    config = omniglot_mm_maml_5w1s.get_config()
    config.model.fusion = "film"
    return config
