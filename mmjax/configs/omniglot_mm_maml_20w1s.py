"""Second-order MAML, Omniglot 20-way 1-shot on images + pen strokes (concat fusion).

omniglot_mm_maml_5w1s with the 20-way settings of omniglot_maml_20w1s.
"""

import ml_collections

from mmjax.configs import omniglot_maml_20w1s, omniglot_mm_maml_5w1s


def get_config() -> ml_collections.ConfigDict:
    config = omniglot_mm_maml_5w1s.get_config()
    twenty = omniglot_maml_20w1s.get_config()
    for name in ("ways", "queries", "meta_batch_size"):
        config[name] = twenty[name]
    config.maml = twenty.maml
    return config
