"""Turns an image config into its image + pen-stroke twin (used by omniglot_mm_<algorithm>_*)."""

import ml_collections

from mmjax.configs import omniglot_mm_maml_5w1s


def to_multimodal(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Same algorithm and sizes, with the data and model of ``omniglot_mm_maml_5w1s``."""
    multimodal = omniglot_mm_maml_5w1s.get_config()
    config.data = multimodal.data
    config.model = multimodal.model
    config.modality_dropout = multimodal.modality_dropout
    config.train_condition = multimodal.train_condition
    return config
