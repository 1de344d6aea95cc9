"""MAML, Omniglot 5-way 1-shot, images + pen strokes with ``concat`` fusion.

omniglot_mm_maml_5w1s with ``model.fusion="concat"``.
"""

import ml_collections

from mmjax.configs import omniglot_mm_maml_5w1s


def get_config() -> ml_collections.ConfigDict:
    config = omniglot_mm_maml_5w1s.get_config()
    config.model.fusion = "concat"
    return config
