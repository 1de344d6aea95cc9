"""Each algorithm's paper defaults, stated once: the table every config module reads.

``ALGORITHMS[name]`` holds, per benchmark family, the ``config.<learner>`` block (the keyword
arguments of ``mmjax.meta.make_learner(learner, model, **block)``) and the run settings the
algorithm's paper changes:

* ``omniglot``: the 5-way block on Omniglot (Finn et al. 2017 protocol, Conv-4 with 64 filters);
  ``omniglot_20way``: what the 20-way protocol changes in it.
* ``images``: the block on the image benchmarks of ``fewshot_images`` (mini-ImageNet protocol);
  ``images_run``: Conv-4 width, meta-batch size per shot count and meta-steps there.
* ``regression``: the block of the MMAML regression protocol (Vuorio et al. 2019).
* ``run``: settings outside the block that hold on every benchmark (Reptile's outer SGD).

``RUN`` holds the logging / evaluation / checkpoint cadence every classification config shares.
Sources are named beside each entry; a family an algorithm has no entry for is not offered.
"""

from __future__ import annotations

import ml_collections

# Finn et al. 2017, Omniglot 20-way: inner lr 0.1, 5 steps (also at test).
_TWENTY_WAY = {"inner_lr": 0.1, "num_inner_steps": 5, "eval_num_inner_steps": 5}
# Finn et al. 2017, mini-ImageNet: 5 inner SGD steps of lr 0.01, 10 at test.
_IMAGES_INNER = {
    "inner_lr": 0.01,
    "num_inner_steps": 5,
    "eval_num_inner_steps": 10,
    "first_order": False,
}
_IMAGES_MAML = {"features": 32, "meta_batch_size": {1: 4, 5: 2}, "num_steps": 60_000}
# The MMAML regression protocol: 5 inner steps of lr 0.001 for every method.
_REGRESSION_INNER = {
    "inner_lr": 0.001,
    "num_inner_steps": 5,
    "eval_num_inner_steps": 5,
    "first_order": False,
}

_MAML_OMNIGLOT = {
    "inner_lr": 0.4,
    "num_inner_steps": 1,
    "eval_num_inner_steps": 3,
    "first_order": False,
    "remat": False,
    "task_batching": "auto",  # "vmap", "scan" or a chunk size; see resolve_task_batching
    # "exact", "first_order", "truncated" or "implicit" (docs/meta_gradients.md)
    "meta_gradient": "exact",
    "truncate": 1,  # "truncated": exact through the last `truncate` inner steps
    "lam": 1.0,  # "implicit": proximal strength
    "cg_steps": 20,  # "implicit": conjugate-gradient iterations of the backward solve
    "cg_tol": 1e-6,  # "implicit": CG relative tolerance
    "first_order_until": 0,  # MAML++ annealing: first order before this meta-step
    "eval_batch_norm": "transductive",  # or "with_support", "per_query"
}
_MAML_IMAGES = dict(_IMAGES_INNER, remat=False, task_batching="auto")
_PROTONET = {"distance": "euclidean", "scale": 1.0, "learn_scale": False}  # Snell et al. 2017
# Reptile (Nichol et al. 2018): the pseudo-gradient θ - φ with SGD(1.0) is its interpolation.
_REPTILE_RUN = {"meta_batch_size": 5, "optimizer": {"name": "sgd", "learning_rate": 1.0}}

ALGORITHMS: dict[str, dict] = {
    # Second-order MAML (Finn et al. 2017).
    "maml": {
        "learner": "maml",
        "omniglot": _MAML_OMNIGLOT,
        "omniglot_20way": _TWENTY_WAY,
        "images": _MAML_IMAGES,
        "images_run": _IMAGES_MAML,
        "regression": _REGRESSION_INNER,
    },
    # First-order MAML: MAML without the second-order term.
    "fomaml": {
        "learner": "maml",
        "omniglot": dict(_MAML_OMNIGLOT, first_order=True),
        "omniglot_20way": _TWENTY_WAY,
        "images": dict(_MAML_IMAGES, first_order=True),
        "images_run": _IMAGES_MAML,
    },
    # MAML++ (Antoniou et al. 2019): LSLR, multi-step loss, derivative-order annealing,
    # per-step batch norm (off by default).
    "mamlpp": {
        "learner": "mamlpp",
        "omniglot": {
            "inner_lr": 0.4,
            "num_inner_steps": 5,
            "lslr": True,  # learned per-layer per-step inner rates
            "per_step_bn": False,  # a meta-learned batch-norm scale/bias copy per inner step
            "multi_step_loss": True,
            "multi_step_anneal_steps": 10_000,  # meta-steps from uniform to last-step weights
            "meta_gradient": "exact",  # "exact", "first_order" or "truncated"
            "truncate": 1,
            "first_order_until": 10_000,  # derivative-order annealing (0: off)
            "task_batching": "auto",
            "eval_batch_norm": "transductive",  # or "with_support", "per_query"
        },
        "omniglot_20way": {},
    },
    # ANIL (Raghu et al. 2020): head-only inner loop, MAML's sizes.
    "anil": {
        "learner": "anil",
        "omniglot": {
            k: _MAML_OMNIGLOT[k]
            for k in ("inner_lr", "num_inner_steps", "eval_num_inner_steps", "first_order")
        },
        "omniglot_20way": _TWENTY_WAY,
        "images": _IMAGES_INNER,
        "images_run": _IMAGES_MAML,
    },
    # Meta-SGD (Li et al. 2017): one inner step, learned per-parameter rates from inner_lr.
    "metasgd": {
        "learner": "metasgd",
        "omniglot": {
            "inner_lr": 0.4,
            "num_inner_steps": 1,
            "eval_num_inner_steps": 1,
            "first_order": False,
        },
        "omniglot_20way": {"inner_lr": 0.1},
        "images": dict(_IMAGES_INNER, num_inner_steps=1, eval_num_inner_steps=1),
        "images_run": _IMAGES_MAML,
    },
    # MMAML (Vuorio et al. 2019): task-encoder FiLM modulation + MAML's inner loop.
    "mmaml": {
        "learner": "mmaml",
        "omniglot": {
            **{
                k: _MAML_OMNIGLOT[k]
                for k in ("inner_lr", "num_inner_steps", "eval_num_inner_steps", "first_order")
            },
            "task_batching": "auto",
            "task_hidden_sizes": (64,),
        },
        "omniglot_20way": _TWENTY_WAY,
        "regression": dict(_REGRESSION_INNER, task_hidden_sizes=(40,)),
    },
    # Multi-MAML (the MMAML paper's baseline): one MAML per mode, told the mode (regression).
    "multi_maml": {"learner": "multi_maml", "regression": _REGRESSION_INNER},
    # Prototypical Networks (Snell et al. 2017): squared Euclidean distance, Adam 1e-3.
    "protonet": {
        "learner": "protonet",
        "omniglot": _PROTONET,
        "omniglot_20way": {},
        "images": _PROTONET,
        "images_run": {"features": 64, "meta_batch_size": {1: 1, 5: 1}, "num_steps": 60_000},
    },
    # Prototypical Networks with cosine similarity x a learned scale (init 10).
    "protonet_cosine": {
        "learner": "protonet",
        "omniglot": {"distance": "cosine", "scale": 10.0, "learn_scale": True},
        "omniglot_20way": {},
    },
    # Relation Network (Sung et al. 2018): MSE on one-hot targets ("triplet": ranking loss).
    "relationnet": {
        "learner": "relationnet",
        "omniglot": {"objective": "mse", "hidden_sizes": (8,)},
        "omniglot_20way": {},
    },
    # Reptile (Nichol et al. 2018): inner Adam lr 1e-3, 50 steps at test, adapts on the query too.
    "reptile": {
        "learner": "reptile",
        "omniglot": {
            "inner_lr": 1e-3,
            "num_inner_steps": 5,
            "eval_num_inner_steps": 50,
            "inner_optimizer": "adam",
            "adapt_on_query": True,  # meta-train on every example of the task
        },
        "omniglot_20way": {"num_inner_steps": 10},
        "images": {
            "inner_lr": 1e-3,
            "num_inner_steps": 8,
            "eval_num_inner_steps": 50,
            "inner_optimizer": "adam",
            "adapt_on_query": True,
        },
        "images_run": {"features": 32, "meta_batch_size": {1: 5, 5: 5}, "num_steps": 100_000},
        "run": _REPTILE_RUN,
    },
}

# Cadence shared by every classification config (the meta-optimizer is Adam 1e-3 unless an
# algorithm's ``run`` entry says otherwise; ``grad_clip_norm`` 0 disables clipping).
RUN: dict = {
    "optimizer": {"name": "adam", "learning_rate": 1e-3, "grad_clip_norm": 0.0},
    "parallel": "none",  # "none" or "sharded" (jit with the task batch split over devices)
    "nan_policy": "stop",  # "stop" or "skip" a non-finite meta-step
    "log_every": 100,
    "eval_every": 2_000,
    "val_episodes": 200,
    "checkpoint_every": 2_000,
    "keep_checkpoints": 3,
    "test_episodes": 600,
    "eval_batch_size": 50,
}


def offered(family: str) -> tuple[str, ...]:
    """The algorithms with an entry for ``family`` (``"omniglot"``, ``"images"``, ...)."""
    return tuple(name for name, entry in ALGORITHMS.items() if family in entry)


def settings(algorithm: str, family: str, *, twenty_way: bool = False) -> dict:
    """A fresh copy of ``algorithm``'s ``config.<learner>`` block on ``family``."""
    entry = ALGORITHMS[algorithm]
    block = dict(entry[family])
    if twenty_way:
        block.update(entry[f"{family}_20way"])
    return block


def apply_run(config: ml_collections.ConfigDict, algorithm: str) -> None:
    """Writes ``RUN`` and then ``algorithm``'s own ``run`` entry into ``config`` (in place)."""
    for key, value in RUN.items():
        config[key] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value
    for key, value in ALGORITHMS[algorithm].get("run", {}).items():
        if isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
