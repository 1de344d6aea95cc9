"""omniglot_mmaml_5w1s on images + pen strokes (the model and data of omniglot_mm_maml_5w1s)."""

import ml_collections

from mmjax.configs import _multimodal, omniglot_mmaml_5w1s


def get_config() -> ml_collections.ConfigDict:
    return _multimodal.to_multimodal(omniglot_mmaml_5w1s.get_config())
