"""Meta-learning algorithms as pure functions, behind one `MetaLearner` interface.

Build a learner by name (``make_learner(name, model, **settings)``; registered on import:
maml, mamlpp, anil, metasgd, reptile, protonet, relationnet, mmaml, maml_regression) and a
meta-training step for it (``make_step(learner, optimizer, mesh=...)``). Each algorithm is
one module (``maml``, ``maml_plus_plus``, ``anil``, ``metasgd``, ``reptile``,
``protonet``, ``relation``, ``mmaml``, ``maml_regression``); the interface is in
``learner``, the shared pieces in ``common``, task batching in ``task_batching``, MAML++'s
per-step batch-norm copies in ``per_step_bn``, the step in ``step`` and the devices in
``parallel``.
"""

from mmjax.meta.anil import anil_learner
from mmjax.meta.common import classification_loss, regression_loss
from mmjax.meta.learner import MetaLearner, available_learners, make_learner
from mmjax.meta.maml import adapt, maml_learner
from mmjax.meta.maml_plus_plus import mamlpp_learner
from mmjax.meta.maml_regression import maml_regression_learner
from mmjax.meta.meta_gradients import META_GRADIENTS, MetaGradient
from mmjax.meta.metasgd import metasgd_learner
from mmjax.meta.mmaml import mmaml_learner
from mmjax.meta.parallel import initialize_distributed, task_mesh
from mmjax.meta.protonet import protonet_learner
from mmjax.meta.relation import relation_learner
from mmjax.meta.reptile import reptile_learner
from mmjax.meta.step import make_step
from mmjax.meta.task_batching import map_over_tasks, mean_over_tasks, resolve_task_batching

__all__ = [
    "META_GRADIENTS",
    "MetaGradient",
    "MetaLearner",
    "adapt",
    "anil_learner",
    "available_learners",
    "classification_loss",
    "initialize_distributed",
    "make_learner",
    "make_step",
    "maml_learner",
    "maml_regression_learner",
    "mamlpp_learner",
    "map_over_tasks",
    "mean_over_tasks",
    "metasgd_learner",
    "mmaml_learner",
    "protonet_learner",
    "regression_loss",
    "relation_learner",
    "reptile_learner",
    "resolve_task_batching",
    "task_mesh",
]
