"""Config -> model, optimizer and device-resident data splits."""

from __future__ import annotations

import ml_collections
import optax

from mmjax.data import (
    cifar_fs_splits,
    cub_splits,
    fc100_splits,
    load_tfds_classes,
    miniimagenet_splits,
    omniglot_multimodal_splits,
    omniglot_splits,
    select_classes,
    tieredimagenet_splits,
    to_device,
)
from mmjax.meta import MetaLearner, make_learner
from mmjax.nn.classifier import Classifier
from mmjax.nn.conv import Conv4
from mmjax.nn.mlp import MLP
from mmjax.nn.multimodal import MultimodalEncoder
from mmjax.nn.resnet import ResNet12
from mmjax.nn.sequence import StrokeEncoder
from mmjax.train import regression

ENCODERS = ("conv4", "resnet12", "mlp", "multimodal")
IMAGE_BENCHMARKS = ("miniimagenet", "tieredimagenet", "cifarfs", "fc100", "cub")
OPTIMIZERS = ("adam", "sgd")
# Keys read without a fallback only where they apply (the shipped configs set them; their
# defaults live in mmjax/configs, nowhere else).
MULTIMODAL_MODEL_KEYS = (
    "fusion", "fusion_features", "fusion_num_heads", "stroke_features", "stroke_kind"
)  # fmt: skip
STROKE_DATA_KEYS = ("background", "evaluation", "stroke_length", "stroke_mode")
REGRESSION_KEYS = ("seed", "data.num_modes", "data.noise_std", "model.hidden_sizes", "shots",
                   "queries", "meta_batch_size", "algorithm", "optimizer.name",
                   "optimizer.learning_rate", "optimizer.grad_clip_norm", "num_steps",
                   "log_every", "eval_tasks_per_mode")  # fmt: skip


def _require(node: ml_collections.ConfigDict, where: str, keys, because: str) -> None:
    """Raises ``ValueError`` naming the first of ``keys`` (dotted) missing from ``node``."""
    for key in keys:
        parent = node
        *parents, leaf = key.split(".")
        for part in parents:
            parent = parent.get(part) if isinstance(parent, ml_collections.ConfigDict) else None
        if not isinstance(parent, ml_collections.ConfigDict) or leaf not in parent:
            raise ValueError(
                f"{where}.{key} is required with {because}; start from a shipped config "
                "(mmjax.available_configs())"
            )


class _Flatten(MLP):
    """MLP over flattened images (``[batch, H, W, C] -> [batch, hidden_sizes[-1]]``)."""

    def __call__(self, x):
        return super().__call__(x.reshape(x.shape[0], -1))


def build_model(config: ml_collections.ConfigDict) -> Classifier:
    """Encoder named by ``config.model.encoder`` plus a ``config.ways``-way linear head.

    ``"multimodal"``: :class:`~mmjax.nn.multimodal.MultimodalEncoder` with Conv-4
    (``model.features``) on images, ``StrokeEncoder(model.stroke_features, model.stroke_kind)``
    on strokes and the fusion layer ``model.fusion`` of width ``model.fusion_features``.
    """
    m = config.model
    if m.encoder == "multimodal":
        _require(m, "model", MULTIMODAL_MODEL_KEYS, 'model.encoder="multimodal"')
        encoder = MultimodalEncoder(
            fusion=m.fusion,
            features=m.fusion_features,
            image_encoder=Conv4(
                features=m.features, num_blocks=m.num_blocks, pool=m.pool, conv_impl=m.conv_impl
            ),
            stroke_encoder=StrokeEncoder(
                features=m.stroke_features, kind=m.stroke_kind, conv_impl=m.conv_impl
            ),
            num_heads=m.fusion_num_heads,
        )
    elif m.encoder == "conv4":
        encoder = Conv4(
            features=m.features, num_blocks=m.num_blocks, pool=m.pool, conv_impl=m.conv_impl
        )
    elif m.encoder == "resnet12":
        _require(m, "model", ("widths",), 'model.encoder="resnet12"')
        encoder = ResNet12(widths=tuple(m.widths), conv_impl=m.conv_impl)
    elif m.encoder == "mlp":
        encoder = _Flatten(hidden_sizes=tuple(m.hidden_sizes), activate_final=True)
    else:
        raise ValueError(f"model.encoder={m.encoder!r} is not one of {ENCODERS}")
    return Classifier(
        encoder=encoder,
        num_classes=config.ways,
        # .get: a config.json written before these keys existed (resume, evaluate) lacks them.
        dtype=m.get("dtype", "float32"),
        param_dtype=m.get("param_dtype", "float32"),
    )


def build_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Meta-optimizer from ``config.optimizer`` (``name``, ``learning_rate``, ``grad_clip_norm``)."""
    o = config.optimizer
    if not o.learning_rate > 0:
        raise ValueError(f"optimizer.learning_rate must be > 0; got {o.learning_rate}")
    if o.name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name={o.name!r} is not one of {OPTIMIZERS}")
    optimizer = getattr(optax, o.name)(o.learning_rate)
    if o.grad_clip_norm:
        optimizer = optax.chain(optax.clip_by_global_norm(o.grad_clip_norm), optimizer)
    return optimizer


def load_splits(config: ml_collections.ConfigDict) -> dict:
    """Loads ``{'train', 'val', 'test'}`` as device arrays ``[classes, examples, H, W, C]``.

    With ``"strokes"`` in ``data.modalities`` (Omniglot only) each split is the pytree
    ``{"image", "strokes", "mask"}`` of `omniglot_multimodal_splits` (``data.stroke_length``
    points per drawing, resampled by ``data.stroke_mode``).

    ``data.name="omniglot"`` reads the official archives (``data.data_dir`` or
    ``$MMJAX_DATA_DIR``); ``"tfds:<name>"`` splits the classes of a TFDS image
    classification dataset 60/20/20 in label order; ``"miniimagenet"``, ``"tieredimagenet"``,
    ``"cifarfs"``, ``"fc100"`` and ``"cub"`` load the RGB benchmarks with their standard class
    splits (``data.source``, ``data.examples_per_class``: 0 = all; see ``docs/datasets.md``).
    """
    d = config.data
    # data.modalities is only set by image + stroke configs; without it, images only.
    modalities = tuple(d.modalities) if "modalities" in d else ("image",)
    if "strokes" in modalities:
        if d.name != "omniglot" or set(modalities) != {"image", "strokes"}:
            raise ValueError(
                f"data.modalities={modalities!r} with data.name={d.name!r}: strokes exist only "
                "for data.name='omniglot', with modalities ('image', 'strokes')"
            )
        _require(d, "data", STROKE_DATA_KEYS, "strokes in data.modalities")
        subsets = (d.background, d.evaluation)
        if subsets != ("background_small1", "background_small2"):
            raise ValueError(
                f"data.background/data.evaluation={subsets}: the image + stroke splits are built "
                "from background_small1 / background_small2 only"
            )
        splits = omniglot_multimodal_splits(
            d.data_dir or None,
            image_size=d.image_size,
            length=d.stroke_length,
            mode=d.stroke_mode,
            rotations=d.rotations,
            num_val_alphabets=d.num_val_alphabets,
            cache_dir=d.cache_dir or None,
            download=d.download,
        )
        return {name: to_device(split) for name, split in splits.items()}
    if d.name == "omniglot":
        _require(d, "data", ("background", "evaluation"), 'data.name="omniglot"')
        splits = omniglot_splits(
            d.data_dir or None,
            image_size=d.image_size,
            rotations=d.rotations,
            num_val_alphabets=d.num_val_alphabets,
            cache_dir=d.cache_dir or None,
            download=d.download,
            background=d.background,
            evaluation=d.evaluation,
        )
        return {name: to_device(split) for name, split in splits.items()}
    if d.name in IMAGE_BENCHMARKS:
        return {name: to_device(split) for name, split in _image_benchmark(d).items()}
    if d.name.startswith("tfds:"):
        data = load_tfds_classes(
            d.name[5:],
            split=d.tfds_split,
            data_dir=d.data_dir or None,
            image_size=d.image_size,
            examples_per_class=d.tfds_examples_per_class,
        )
        n = data.num_classes
        bounds = {
            "train": range(0, int(0.6 * n)),
            "val": range(int(0.6 * n), int(0.8 * n)),
            "test": range(int(0.8 * n), n),
        }
        return {name: to_device(select_classes(data, list(r))) for name, r in bounds.items()}
    raise ValueError(
        f"data.name={d.name!r} is not 'omniglot', one of {IMAGE_BENCHMARKS} or 'tfds:<dataset>'"
    )


def _image_benchmark(d: ml_collections.ConfigDict) -> dict:
    """The RGB benchmark ``d.name`` (``[C, E, H, W, 3]`` splits) from ``mmjax.data``."""
    _require(d, "data", ("source", "examples_per_class"), f"data.name={d.name!r}")
    common = {"image_size": d.image_size, "cache_dir": d.cache_dir or None}
    examples = d.examples_per_class or None
    source = d.source
    data_dir = d.data_dir or None
    if d.name == "miniimagenet":
        return miniimagenet_splits(data_dir, source=source, **common)
    if d.name == "tieredimagenet":
        return tieredimagenet_splits(data_dir, examples_per_class=examples, **common)
    tfds = {**common, "examples_per_class": examples, "download": d.download}
    if d.name == "cub":
        return cub_splits(data_dir, source=source, **tfds)
    load = cifar_fs_splits if d.name == "cifarfs" else fc100_splits
    return load(data_dir, **tfds)


def build_learner(config: ml_collections.ConfigDict, model) -> MetaLearner:
    """The algorithm ``config.algorithm`` with the settings in ``config.<algorithm>``."""
    _require(config, "config", ("algorithm",), "a classification config")
    name = config.algorithm
    settings = config.get(name)  # a learner without settings takes its own defaults
    settings = {} if settings is None else settings.to_dict()
    try:
        return make_learner(name, model, **settings)
    except (ValueError, TypeError) as error:
        raise type(error)(f"config.{name}: {error}") from None


def regression_settings(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A regression config (``data.name="regression"``) as `mmjax.train.regression` reads it.

    That trainer takes one flat ConfigDict (``method``, ``num_modes``, ``inner_lr``,
    ``learning_rate``, ...); this maps the nested schema of ``mmjax.configs.regression`` onto
    it: ``config.<algorithm>`` holds the inner settings, ``optimizer`` the Adam settings.
    """
    _require(config, "config", REGRESSION_KEYS, 'data.name="regression"')
    _require(config, "config", (config.algorithm,), f"algorithm={config.algorithm!r}")
    if config.optimizer.name != "adam":
        raise ValueError(
            f"optimizer.name={config.optimizer.name!r}: the regression trainer uses 'adam'"
        )
    inner = config[config.algorithm].to_dict()
    flat = dict(
        seed=config.seed,
        method=config.algorithm,
        num_modes=config.data.num_modes,
        shots=config.shots,
        queries=config.queries,
        noise_std=config.data.noise_std,
        hidden_sizes=tuple(config.model.hidden_sizes),
        **inner,
        meta_batch_size=config.meta_batch_size,
        learning_rate=config.optimizer.learning_rate,
        grad_clip_norm=config.optimizer.grad_clip_norm,
        num_steps=config.num_steps,
        log_every=config.log_every,
        eval_tasks_per_mode=config.eval_tasks_per_mode,
    )
    return ml_collections.ConfigDict(flat)


def run_regression(config: ml_collections.ConfigDict, method: str | None = None) -> dict:
    """Trains and evaluates a regression config with `mmjax.train.regression.run_regression`.

    ``method`` (default ``config.algorithm``): "maml", "multi_maml" or "mmaml", all with the
    inner settings of ``config.<algorithm>``.
    """
    return regression.run_regression(regression_settings(config), method)
