"""Data: Omniglot archives and the RGB few-shot benchmarks -> class-grouped arrays, pen strokes,
on-device episode sampling.

Re-exported here: the split loaders, the episode samplers and the modality conditions a user
calls. Archive and cache plumbing (checksums, atomic writes, paths) and stroke processing live in
their modules (:mod:`mmjax.data.archives`, :mod:`mmjax.data.strokes`, ...).
"""

from mmjax.data.augment import augment_episodes
from mmjax.data.cifar_fewshot import cifar_fs_splits, fc100_splits
from mmjax.data.cub import cub_splits
from mmjax.data.episodes import Episode, sample_episode, sample_episodes, to_device
from mmjax.data.lake_runs import LakeRuns, load_lake_runs
from mmjax.data.miniimagenet import miniimagenet_splits
from mmjax.data.modality import CONDITIONS, apply_condition, modality_dropout
from mmjax.data.omniglot import ClassImages, load_omniglot_subset, omniglot_splits, select_classes
from mmjax.data.regression import FAMILIES, sample_regression_tasks
from mmjax.data.strokes import (
    StrokeSequences,
    load_omniglot_strokes,
    omniglot_multimodal_class_splits,
    omniglot_multimodal_splits,
)
from mmjax.data.tfds import TfdsClassImages, load_tfds_classes
from mmjax.data.tieredimagenet import tieredimagenet_splits

__all__ = [
    "CONDITIONS",
    "FAMILIES",
    "ClassImages",
    "Episode",
    "LakeRuns",
    "StrokeSequences",
    "TfdsClassImages",
    "apply_condition",
    "augment_episodes",
    "cifar_fs_splits",
    "cub_splits",
    "fc100_splits",
    "load_lake_runs",
    "load_omniglot_strokes",
    "load_omniglot_subset",
    "load_tfds_classes",
    "miniimagenet_splits",
    "modality_dropout",
    "omniglot_multimodal_class_splits",
    "omniglot_multimodal_splits",
    "omniglot_splits",
    "sample_episode",
    "sample_episodes",
    "sample_regression_tasks",
    "select_classes",
    "tieredimagenet_splits",
    "to_device",
]
