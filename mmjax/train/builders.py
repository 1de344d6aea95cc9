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
from mmjax.nn.resnet import RESNET12_WIDTHS, ResNet12
from mmjax.nn.sequence import StrokeEncoder

ENCODERS = ("conv4", "resnet12", "mlp", "multimodal")
IMAGE_BENCHMARKS = ("miniimagenet", "tieredimagenet", "cifarfs", "fc100", "cub")
OPTIMIZERS = ("adam", "sgd")


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
        encoder = MultimodalEncoder(
            fusion=m.get("fusion", "concat"),
            features=m.get("fusion_features", m.features),
            image_encoder=Conv4(
                features=m.features, num_blocks=m.num_blocks, pool=m.pool, conv_impl=m.conv_impl
            ),
            stroke_encoder=StrokeEncoder(
                features=m.get("stroke_features", m.features),
                kind=m.get("stroke_kind", "conv"),
                conv_impl=m.conv_impl,
            ),
            num_heads=m.get("fusion_num_heads", 4),
        )
    elif m.encoder == "conv4":
        encoder = Conv4(
            features=m.features, num_blocks=m.num_blocks, pool=m.pool, conv_impl=m.conv_impl
        )
    elif m.encoder == "resnet12":
        encoder = ResNet12(widths=tuple(m.get("widths", RESNET12_WIDTHS)), conv_impl=m.conv_impl)
    elif m.encoder == "mlp":
        encoder = _Flatten(hidden_sizes=tuple(m.hidden_sizes), activate_final=True)
    else:
        raise ValueError(f"model.encoder={m.encoder!r} is not one of {ENCODERS}")
    return Classifier(
        encoder=encoder,
        num_classes=config.ways,
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
    modalities = tuple(d.get("modalities", ("image",)))
    if "strokes" in modalities:
        if d.name != "omniglot" or set(modalities) != {"image", "strokes"}:
            raise ValueError(
                f"data.modalities={modalities!r} with data.name={d.name!r}: strokes exist only "
                "for data.name='omniglot', with modalities ('image', 'strokes')"
            )
        subsets = (
            d.get("background", "background_small1"),
            d.get("evaluation", "background_small2"),
        )
        if subsets != ("background_small1", "background_small2"):
            raise ValueError(
                f"data.background/data.evaluation={subsets}: the image + stroke splits are built "
                "from background_small1 / background_small2 only"
            )
        splits = omniglot_multimodal_splits(
            d.data_dir or None,
            image_size=d.image_size,
            length=d.get("stroke_length", 64),
            mode=d.get("stroke_mode", "arclength"),
            rotations=d.rotations,
            num_val_alphabets=d.num_val_alphabets,
            cache_dir=d.cache_dir or None,
            download=d.download,
        )
        return {name: to_device(split) for name, split in splits.items()}
    if d.name == "omniglot":
        splits = omniglot_splits(
            d.data_dir or None,
            image_size=d.image_size,
            rotations=d.rotations,
            num_val_alphabets=d.num_val_alphabets,
            cache_dir=d.cache_dir or None,
            download=d.download,
            background=d.get("background", "background_small1"),
            evaluation=d.get("evaluation", "background_small2"),
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
    common = {"image_size": d.image_size, "cache_dir": d.cache_dir or None}
    examples = d.get("examples_per_class", 0) or None
    source = d.get("source", "auto")
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
    name = config.get("algorithm", "maml")
    settings = config.get(name)
    settings = {} if settings is None else settings.to_dict()
    try:
        return make_learner(name, model, **settings)
    except (ValueError, TypeError) as error:
        raise type(error)(f"config.{name}: {error}") from None
