"""MAML, Omniglot 5-way 1-shot, images + pen strokes with ``low_rank_tensor`` fusion.

omniglot_mm_maml_5w1s with ``model.fusion="low_rank_tensor"``.
"""

import ml_collections

from mmjax.configs import omniglot_mm_maml_5w1s


def get_config() -> ml_collections.ConfigDict:
    config = omniglot_mm_maml_5w1s.get_config()
    config.model.fusion = "low_rank_tensor"
    return config
