"""MAML++ (Antoniou et al. 2019) pieces on Omniglot 5-way 1-shot; otherwise as omniglot_maml_5w1s."""

import ml_collections

from mmjax.configs import omniglot_maml_5w1s


def get_config() -> ml_collections.ConfigDict:
    """LSLR, multi-step loss and derivative-order annealing; see mmjax.meta.maml_plus_plus."""
    config = omniglot_maml_5w1s.get_config()
    del config.maml
    config.algorithm = "mamlpp"
    config.mamlpp = ml_collections.ConfigDict(
        dict(
            inner_lr=0.4,
            num_inner_steps=5,
            lslr=True,  # learned per-layer per-step inner rates
            multi_step_loss=True,
            multi_step_anneal_steps=10_000,  # meta-steps from uniform to last-step weights
            meta_gradient="exact",  # "exact", "first_order" or "truncated"
            truncate=1,
            first_order_until=10_000,  # derivative-order annealing (0: off)
            task_batching="auto",
            eval_batch_norm="transductive",  # or "with_support", "per_query"
        )
    )
    return config
