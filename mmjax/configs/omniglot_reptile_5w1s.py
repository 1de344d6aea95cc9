"""Reptile, Omniglot 5-way 1-shot (Nichol et al. 2018: inner Adam, lr 1e-3, 5 steps, 50 at test;
outer SGD with step 1.0, meta-batch 5); otherwise as omniglot_maml_5w1s."""

import ml_collections

from mmjax.configs import omniglot_maml_5w1s


def get_config() -> ml_collections.ConfigDict:
    config = omniglot_maml_5w1s.get_config()
    del config.maml
    config.algorithm = "reptile"
    config.reptile = ml_collections.ConfigDict(
        dict(
            inner_lr=1e-3,
            num_inner_steps=5,
            eval_num_inner_steps=50,
            inner_optimizer="adam",
            adapt_on_query=True,  # meta-train on every example of the task
        )
    )
    config.meta_batch_size = 5
    config.optimizer.name = "sgd"  # pseudo-gradient θ - φ with SGD(ε) is Reptile's interpolation
    config.optimizer.learning_rate = 1.0
    return config
