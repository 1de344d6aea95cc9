"""Second-order MAML, Omniglot 5-way 1-shot on images + pen strokes (concat fusion).

As omniglot_maml_5w1s, with a `MultimodalEncoder`: Conv-4 on images, a 1-D conv
`StrokeEncoder` on 64-point stroke sequences, concatenation fusion to 64 features.
"""

import ml_collections

from mmjax.configs import omniglot_maml_5w1s


def get_config() -> ml_collections.ConfigDict:
    config = omniglot_maml_5w1s.get_config()
    config.data.modalities = ("image", "strokes")
    config.data.stroke_length = 64
    config.data.stroke_mode = "arclength"  # or "time"
    config.model.encoder = "multimodal"
    config.model.fusion = "concat"  # any name in mmjax.fusion.FUSION_METHODS
    config.model.fusion_features = 64
    config.model.fusion_num_heads = 4  # for fusion="cross_attention"
    config.model.stroke_features = 64
    config.model.stroke_kind = "conv"  # "conv", "gru" or "transformer"
    config.modality_dropout = 0.0  # per-sample, per-modality drop rate in [0, 0.5]
    config.train_condition = "both"  # e.g. "image_only" for a single-modality baseline
    return config
