"""Meta-learning algorithms as pure functions, behind one `MetaLearner` interface.

Registered on import (``make_learner(name, model, **settings)``): maml, reptile, metasgd, anil,
protonet, relationnet, mmaml, mamlpp.
"""

from mmjax.meta.batch_norm_eval import EVAL_BATCH_NORMS, query_logits, query_metrics
from mmjax.meta.learner import MetaLearner, available_learners, make_learner, maml_learner, register
from mmjax.meta.maml import (
    adapt,
    check_inner_lr,
    classification_loss,
    grad_over_tasks,
    make_meta_train_step,
    map_over_tasks,
    meta_grad,
    meta_loss,
    resolve_task_batching,
    task_loss,
)
from mmjax.meta.anil import adapt_head, anil_learner
from mmjax.meta.maml_plus_plus import init_lslr, mamlpp_learner, multi_step_weights
from mmjax.meta.meta_gradients import (
    META_GRADIENTS,
    MetaGradient,
    adapt_implicit,
    meta_gradient_spec,
    proximal_solve,
)
from mmjax.meta.metasgd import init_inner_lr, metasgd_learner
from mmjax.meta.mmaml import TaskEncoder, mmaml_learner, regression_loss
from mmjax.meta.parallel import (
    initialize_distributed,
    make_pmap_meta_train_step,
    make_sharded_meta_train_step,
    shard_for_pmap,
    task_mesh,
)
from mmjax.meta.protonet import DISTANCES, prototype_logits, prototypes, protonet_learner
from mmjax.meta.relation import OBJECTIVES, RelationModule, relation_learner
from mmjax.meta.reptile import pseudo_gradient, reptile_learner

__all__ = [
    "DISTANCES",
    "EVAL_BATCH_NORMS",
    "META_GRADIENTS",
    "MetaGradient",
    "MetaLearner",
    "OBJECTIVES",
    "RelationModule",
    "TaskEncoder",
    "adapt",
    "adapt_head",
    "adapt_implicit",
    "anil_learner",
    "available_learners",
    "check_inner_lr",
    "classification_loss",
    "grad_over_tasks",
    "init_inner_lr",
    "init_lslr",
    "initialize_distributed",
    "make_learner",
    "make_meta_train_step",
    "make_pmap_meta_train_step",
    "make_sharded_meta_train_step",
    "maml_learner",
    "mamlpp_learner",
    "map_over_tasks",
    "meta_grad",
    "meta_gradient_spec",
    "meta_loss",
    "metasgd_learner",
    "mmaml_learner",
    "multi_step_weights",
    "protonet_learner",
    "prototype_logits",
    "prototypes",
    "proximal_solve",
    "pseudo_gradient",
    "query_logits",
    "query_metrics",
    "register",
    "regression_loss",
    "relation_learner",
    "reptile_learner",
    "resolve_task_batching",
    "shard_for_pmap",
    "task_loss",
    "task_mesh",
]
