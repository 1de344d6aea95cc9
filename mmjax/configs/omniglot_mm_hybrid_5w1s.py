"""MAML, Omniglot 5-way 1-shot, images + pen strokes with ``hybrid`` fusion.

omniglot_mm_maml_5w1s with ``model.fusion="hybrid"``.
"""

import ml_collections

from mmjax.configs import omniglot_mm_maml_5w1s


def get_config() -> ml_collections.ConfigDict:
    config = omniglot_mm_maml_5w1s.get_config()
    config.model.fusion = "hybrid"
    return config
