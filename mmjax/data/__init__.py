"""Data: Omniglot archives and the RGB few-shot benchmarks -> class-grouped arrays, pen strokes,
on-device episode sampling."""

from mmjax.data.archives import (
    KNOWN_MD5,
    archive_md5,
    archive_path,
    atomic_save_npz,
    cache_dir,
    resolve_data_dir,
)
from mmjax.data.episodes import (
    Episode,
    classes_and_examples,
    sample_episode,
    sample_episodes,
    to_device,
    validate_episode_spec,
)
from mmjax.data.omniglot import (
    ClassImages,
    class_alphabets,
    load_omniglot_subset,
    omniglot_splits,
    read_image_archive,
    rotate_classes,
    select_classes,
)
from mmjax.data.strokes import (
    StrokeSequences,
    load_omniglot_strokes,
    omniglot_multimodal_class_splits,
    omniglot_multimodal_splits,
    parse_strokes,
    resample_strokes,
    rotate_sequences,
    rotate_strokes,
    strokes_to_points,
    strokes_to_sequence,
)
from mmjax.data.lake_runs import LakeRuns, load_lake_runs
from mmjax.data.modality import CONDITIONS, apply_condition, modality_dropout
from mmjax.data.regression import FAMILIES, sample_regression_tasks
from mmjax.data.tfds import TfdsClassImages, load_tfds_classes
from mmjax.data.augment import augment, augment_episodes
from mmjax.data.cifar_fewshot import (
    CIFAR_FS_CLASSES,
    FC100_CLASSES,
    FC100_SUPERCLASSES,
    cifar_fs_splits,
    fc100_splits,
)
from mmjax.data.cub import cub_split_of, cub_splits
from mmjax.data.miniimagenet import miniimagenet_splits
from mmjax.data.tieredimagenet import tieredimagenet_splits

__all__ = [
    "CIFAR_FS_CLASSES",
    "FC100_CLASSES",
    "FC100_SUPERCLASSES",
    "augment",
    "augment_episodes",
    "cifar_fs_splits",
    "cub_split_of",
    "cub_splits",
    "fc100_splits",
    "miniimagenet_splits",
    "tieredimagenet_splits",
    "CONDITIONS",
    "FAMILIES",
    "LakeRuns",
    "apply_condition",
    "load_lake_runs",
    "modality_dropout",
    "sample_regression_tasks",
    "KNOWN_MD5",
    "ClassImages",
    "Episode",
    "StrokeSequences",
    "TfdsClassImages",
    "archive_md5",
    "archive_path",
    "atomic_save_npz",
    "cache_dir",
    "class_alphabets",
    "classes_and_examples",
    "load_omniglot_strokes",
    "load_omniglot_subset",
    "load_tfds_classes",
    "omniglot_multimodal_class_splits",
    "omniglot_multimodal_splits",
    "omniglot_splits",
    "parse_strokes",
    "read_image_archive",
    "resample_strokes",
    "resolve_data_dir",
    "rotate_classes",
    "rotate_sequences",
    "rotate_strokes",
    "sample_episode",
    "sample_episodes",
    "select_classes",
    "strokes_to_points",
    "strokes_to_sequence",
    "to_device",
    "validate_episode_spec",
]
