"""Meta-learning algorithms as pure functions, behind one `MetaLearner` interface."""

from mmjax.meta.learner import MetaLearner, available_learners, make_learner, maml_learner, register
from mmjax.meta.maml import (
    adapt,
    check_inner_lr,
    classification_loss,
    make_meta_train_step,
    meta_grad,
    meta_loss,
    task_loss,
)
from mmjax.meta.parallel import (
    initialize_distributed,
    make_pmap_meta_train_step,
    make_sharded_meta_train_step,
    shard_for_pmap,
    task_mesh,
)

__all__ = [
    "MetaLearner",
    "adapt",
    "available_learners",
    "check_inner_lr",
    "classification_loss",
    "initialize_distributed",
    "make_learner",
    "make_meta_train_step",
    "make_pmap_meta_train_step",
    "make_sharded_meta_train_step",
    "maml_learner",
    "meta_grad",
    "meta_loss",
    "register",
    "shard_for_pmap",
    "task_loss",
    "task_mesh",
]
