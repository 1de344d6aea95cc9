"""Every Omniglot experiment: one parameterised config (Finn et al. 2017 protocol, Conv-4).

``get_config(arg)`` with ``arg`` a short name of `CONFIG_NAMES` (``omniglot_maml_5w1s``,
``omniglot_mm_concat_5w1s``, ...) or ``"key=value,..."`` over `SPEC`::

    mmjax train --config omniglot:algorithm=anil,ways=20,modalities=image+strokes,fusion=concat

* ``algorithm``: a name of `ALGORITHMS` (``mmjax.configs.defaults`` holds its settings, as
  ``config.<learner>``); ``fomaml`` is MAML with ``first_order=True``, ``protonet_cosine``
  ProtoNets with a cosine distance.
* ``ways``: 5 (15 queries, meta-batch 32) or 20 (5 queries, meta-batch 16, and the 20-way
  inner settings of the algorithm's table entry); ``shots``: 1 or 5.
* ``modalities``: ``image`` or ``image+strokes`` (a `MultimodalEncoder`: Conv-4 on images, a
  1-D conv `StrokeEncoder` on 64-point pen-stroke sequences, ``fusion`` to 64 features).
"""

from __future__ import annotations

import ml_collections

from mmjax.configs import defaults, parse_arg

ALGORITHMS = defaults.offered("omniglot")
# The names of mmjax.fusion.FUSION_METHODS (a test keeps the two equal).
FUSIONS = (
    "concat", "late", "hybrid", "attention", "cross_attention", "tensor", "low_rank_tensor",
    "gated", "film",
)  # fmt: skip
MODALITIES = ("image", "image+strokes")
SPEC = {"algorithm": "maml", "ways": 5, "shots": 1, "modalities": "image", "fusion": "concat"}
CHOICES = {
    "algorithm": ALGORITHMS,
    "ways": (5, 20),
    "shots": (1, 5),
    "modalities": MODALITIES,
    "fusion": FUSIONS,
}

_TWENTY_WAY = ("maml", "anil", "metasgd", "mmaml", "protonet", "protonet_cosine",
               "relationnet", "reptile")  # fmt: skip


def _names() -> dict[str, str]:
    """The shipped short names -> their ``arg``."""
    names = {}
    for algorithm in ALGORITHMS:
        for ways in (5, 20) if algorithm in _TWENTY_WAY else (5,):
            arg = f"algorithm={algorithm},ways={ways}"
            names[f"omniglot_{algorithm}_{ways}w1s"] = arg
            if algorithm in _TWENTY_WAY:
                names[f"omniglot_mm_{algorithm}_{ways}w1s"] = arg + ",modalities=image+strokes"
    for fusion in FUSIONS:  # MAML 5-way with each fusion
        names[f"omniglot_mm_{fusion}_5w1s"] = f"modalities=image+strokes,fusion={fusion}"
    return names


CONFIG_NAMES: dict[str, str] = _names()


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The experiment named by ``arg`` (a `CONFIG_NAMES` key or ``"key=value,..."``).

    Raises:
      ValueError: an unknown key or value (naming the allowed ones and the closest), or a
        ``fusion`` other than ``concat`` with ``modalities=image``.
    """
    spec = parse_arg(CONFIG_NAMES.get(arg, arg), source="omniglot", choices=CHOICES, **SPEC)
    multimodal = spec.modalities == "image+strokes"
    if not multimodal and spec.fusion != "concat":
        raise ValueError(
            f"omniglot: fusion={spec.fusion!r} needs modalities='image+strokes' (got 'image')"
        )
    twenty = spec.ways == 20
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.data = ml_collections.ConfigDict(
        {
            "name": "omniglot",  # "omniglot" or "tfds:<dataset>"
            "data_dir": "",  # "" -> $MMJAX_DATA_DIR
            "cache_dir": "",  # "" -> $MMJAX_CACHE_DIR or ~/.cache/mmjax
            "download": False,
            "image_size": 28,
            "rotations": True,  # rotated copies of train characters as extra classes
            "num_val_alphabets": 1,
            "background": "background_small1",  # train/val archive; "background" = full Omniglot
            "evaluation": "background_small2",  # meta-test archive; "evaluation" = full Omniglot
            "tfds_split": "train",  # for "tfds:<dataset>" only
            "tfds_examples_per_class": 20,
        }
    )
    config.model = ml_collections.ConfigDict(
        {
            "encoder": "conv4",
            "features": 64,
            "num_blocks": 4,
            "pool": "stride",
            "conv_impl": "auto",
            "hidden_sizes": (256, 128),  # for encoder="mlp"
            "dtype": "float32",  # compute dtype: "bfloat16" for bf16 activations and matmuls
            "param_dtype": "float32",  # master parameters (only float32 is accepted)
        }
    )
    config.ways = spec.ways
    config.shots = spec.shots
    config.queries = 5 if twenty else 15
    config.meta_batch_size = 16 if twenty else 32
    # see mmjax.meta.available_learners(); settings in config.<algorithm>
    config.algorithm = defaults.ALGORITHMS[spec.algorithm]["learner"]
    config[config.algorithm] = ml_collections.ConfigDict(
        defaults.settings(spec.algorithm, "omniglot", twenty_way=twenty)
    )
    config.num_steps = 60_000
    defaults.apply_run(config, spec.algorithm)
    if multimodal:
        _add_strokes(config, spec.fusion)
    return config


def _add_strokes(config: ml_collections.ConfigDict, fusion: str) -> None:
    """Images + pen strokes: the data, encoder and modality settings (in place)."""
    config.data.modalities = ("image", "strokes")
    config.data.stroke_length = 64
    config.data.stroke_mode = "arclength"  # or "time"
    config.model.encoder = "multimodal"
    config.model.fusion = fusion  # any name in mmjax.fusion.FUSION_METHODS
    config.model.fusion_features = 64
    config.model.fusion_num_heads = 4  # for fusion="cross_attention"
    config.model.stroke_features = 64
    config.model.stroke_kind = "conv"  # "conv", "gru" or "transformer"
    config.modality_dropout = 0.0  # per-sample, per-modality drop rate in [0, 0.5]
    config.train_condition = "both"  # e.g. "image_only" for a single-modality baseline
