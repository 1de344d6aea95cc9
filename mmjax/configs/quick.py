"""The README's main job: a real MAML run on Omniglot that learns in a few CPU minutes."""

import ml_collections

from mmjax.configs import omniglot


def get_config() -> ml_collections.ConfigDict:
    """``omniglot_maml_5w1s`` with 32 filters, 5 queries, 8 tasks per meta-batch, 1500 steps."""
    config = omniglot.get_config("omniglot_maml_5w1s")
    config.model.features = 32
    config.queries = 5
    config.meta_batch_size = 8
    config.num_steps = 1500
    config.log_every = 20
    config.eval_every = 500
    config.val_episodes = 100
    config.checkpoint_every = 500
    config.test_episodes = 600
    return config
