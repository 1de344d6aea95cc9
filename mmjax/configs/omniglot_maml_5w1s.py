"""Second-order MAML, Omniglot 5-way 1-shot (Finn et al. 2017 settings, Conv-4)."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """Returns the full-length experiment; every field can be overridden with ``--set``."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.data = ml_collections.ConfigDict(
        dict(
            name="omniglot",  # "omniglot" or "tfds:<dataset>"
            data_dir="",  # "" -> $MMJAX_DATA_DIR
            cache_dir="",  # "" -> $MMJAX_CACHE_DIR or ~/.cache/mmjax
            download=False,
            image_size=28,
            rotations=True,  # rotated copies of train characters as extra classes
            num_val_alphabets=1,
            background="background_small1",  # train/val archive; "background" = full Omniglot
            evaluation="background_small2",  # meta-test archive; "evaluation" = full Omniglot
            tfds_split="train",  # for "tfds:<dataset>" only
            tfds_examples_per_class=20,
        )
    )
    config.model = ml_collections.ConfigDict(
        dict(
            encoder="conv4",
            features=64,
            num_blocks=4,
            pool="stride",
            conv_impl="auto",
            hidden_sizes=(256, 128),  # for encoder="mlp"
        )
    )
    config.ways = 5
    config.shots = 1
    config.queries = 15
    config.meta_batch_size = 32
    config.algorithm = "maml"  # see mmjax.meta.available_learners(); settings in config.<algorithm>
    config.maml = ml_collections.ConfigDict(
        dict(
            inner_lr=0.4,
            num_inner_steps=1,
            eval_num_inner_steps=3,
            first_order=False,
            remat=False,
            task_batching="auto",  # "vmap", "scan" or a chunk size; see resolve_task_batching
            # "exact", "first_order", "truncated" or "implicit" (docs/meta_gradients.md)
            meta_gradient="exact",
            truncate=1,  # "truncated": exact through the last `truncate` inner steps
            lam=1.0,  # "implicit": proximal strength
            cg_steps=20,  # "implicit": conjugate-gradient iterations of the backward solve
            cg_tol=1e-6,  # "implicit": CG relative tolerance
            first_order_until=0,  # MAML++ annealing: first order before this meta-step
            eval_batch_norm="transductive",  # or "with_support", "per_query"
        )
    )
    config.optimizer = ml_collections.ConfigDict(
        dict(name="adam", learning_rate=1e-3, grad_clip_norm=0.0)
    )  # 0 disables clipping
    config.num_steps = 60_000
    config.parallel = "none"  # "none" or "sharded" (jit with the task batch split over devices)
    config.nan_policy = "stop"  # "stop" or "skip" a non-finite meta-step
    config.log_every = 100
    config.eval_every = 2_000
    config.val_episodes = 200
    config.checkpoint_every = 2_000
    config.keep_checkpoints = 3
    config.test_episodes = 600
    config.eval_batch_size = 50
    return config
