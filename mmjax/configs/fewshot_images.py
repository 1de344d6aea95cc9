"""Image few-shot benchmarks: one parameterised config for every data set x algorithm x backbone.

Short names ``<dataset>_<algorithm>[_resnet12]_5w<shots>s`` (`CONFIG_NAMES`, registered in
``mmjax.configs``), e.g. ``miniimagenet_maml_5w1s`` or ``cifarfs_protonet_resnet12_5w5s``;
or big_vision style ``get_config("dataset=fc100,algorithm=anil,shots=5,backbone=conv4")``.

Protocol defaults (``images`` / ``images_run`` in ``mmjax.configs.defaults``), from the papers:

* MAML / FOMAML (Finn et al. 2017, mini-ImageNet): Conv-4 with 32 filters and 2x2
  max-pool, 5 inner SGD steps of lr 0.01 (10 at test), Adam 1e-3, meta-batch 4 tasks for
  1-shot and 2 for 5-shot, 15 queries, 60k meta-steps. ANIL (Raghu et al. 2020) and
  Meta-SGD (Li et al. 2017; one inner step, learned per-parameter rates starting at 0.01)
  use MAML's sizes.
* ProtoNets (Snell et al. 2017): Conv-4 with 64 filters and max-pool, Adam 1e-3. Snell et al.
  train with 30-way (1-shot) / 20-way (5-shot) episodes and halve the learning rate every
  2000 episodes; here training uses the test ways (5) and a constant rate.
* Reptile (Nichol et al. 2018, mini-ImageNet): Conv-4 with 32 filters, 8 inner Adam steps of
  lr 1e-3 (50 at test), outer SGD step 1.0 (not annealed here), meta-batch 5, 100k steps.
* ResNet-12 (``_resnet12``): the TADAM / MetaOptNet backbone (64-160-320-640) for ProtoNets
  and ANIL, random crop + flip augmentation on; MAML uses the narrower 32-64-128-256 widths
  (second order through the full network is memory-bound). MetaOptNet's SGD with momentum,
  weight decay and DropBlock are not reproduced (Adam 1e-3 here).

CIFAR-FS and FC100 use 32x32 inputs, the others 84x84; everything else is as mini-ImageNet.
"""

from __future__ import annotations

import itertools

import ml_collections

from mmjax.configs import defaults, parse_arg

DATASETS = {
    "miniimagenet": {"image_size": 84, "padding": 8},
    "tieredimagenet": {"image_size": 84, "padding": 8},
    "cifarfs": {"image_size": 32, "padding": 4},
    "fc100": {"image_size": 32, "padding": 4},
    "cub": {"image_size": 84, "padding": 8},
}
ALGORITHMS = defaults.offered("images")
BACKBONES = ("conv4", "resnet12")
RESNET12_ALGORITHMS = ("maml", "protonet", "anil")
SHOTS = (1, 5)
SPEC = {"dataset": "miniimagenet", "algorithm": "maml", "backbone": "conv4", "shots": 1}
CHOICES = {"dataset": tuple(DATASETS), "algorithm": ALGORITHMS, "backbone": BACKBONES,
           "shots": SHOTS}  # fmt: skip

# algorithm -> Conv-4 width, meta-batch size per shot count and meta-steps (the table's).
PROTOCOLS = {name: defaults.ALGORITHMS[name]["images_run"] for name in ALGORITHMS}
MAML_RESNET12_WIDTHS = (32, 64, 128, 256)
RESNET12_WIDTHS = (64, 160, 320, 640)


def _name(dataset: str, algorithm: str, backbone: str, shots: int) -> str:
    suffix = "_resnet12" if backbone == "resnet12" else ""
    return f"{dataset}_{algorithm}{suffix}_5w{shots}s"


CONFIG_NAMES: dict[str, str] = {
    _name(d, a, b, s): f"dataset={d},algorithm={a},backbone={b},shots={s}"
    for d, a, b, s in itertools.product(DATASETS, ALGORITHMS, BACKBONES, SHOTS)
    if b == "conv4" or a in RESNET12_ALGORITHMS
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Config of one benchmark run; ``arg``: a short name or ``"dataset=...,algorithm=..."``.

    Raises:
      ValueError: an unknown key, data set, algorithm, backbone or shot count.
    """
    spec = parse_arg(CONFIG_NAMES.get(arg, arg), source="fewshot_images", choices=CHOICES, **SPEC)
    dataset, algorithm, backbone, shots = (
        spec[k] for k in ("dataset", "algorithm", "backbone", "shots")
    )
    protocol = PROTOCOLS[algorithm]
    sizes = DATASETS[dataset]
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.data = ml_collections.ConfigDict(
        {
            "name": dataset,
            "data_dir": "",  # "" -> $MMJAX_DATA_DIR (TFDS data sets: TFDS's default folder)
            "cache_dir": "",  # "" -> $MMJAX_CACHE_DIR or ~/.cache/mmjax
            "download": False,  # TFDS data sets only (cifarfs, fc100, cub with source="tfds")
            "image_size": sizes["image_size"],
            "source": "auto",  # miniimagenet: "csv" | "pickle"; cub: "archive" | "tfds"
            "examples_per_class": 0,  # 0 -> all (tiered / CUB: the split's smallest class)
        }
    )
    resnet = backbone == "resnet12"
    config.model = ml_collections.ConfigDict(
        {
            "encoder": backbone,
            "features": protocol["features"],
            "num_blocks": 4,
            "pool": "max",
            "conv_impl": "auto",
            "widths": MAML_RESNET12_WIDTHS if algorithm == "maml" else RESNET12_WIDTHS,
            "dtype": "float32",  # compute dtype: "bfloat16" for bf16 activations and matmuls
            "param_dtype": "float32",  # master parameters (only float32 is accepted)
        }
    )
    config.augment = ml_collections.ConfigDict(
        {"enabled": resnet and algorithm != "maml", "padding": sizes["padding"], "flip": True}
    )
    config.ways = 5
    config.shots = shots
    config.queries = 15
    config.meta_batch_size = protocol["meta_batch_size"][shots]
    config.algorithm = defaults.ALGORITHMS[algorithm]["learner"]
    config[config.algorithm] = ml_collections.ConfigDict(defaults.settings(algorithm, "images"))
    config.num_steps = protocol["num_steps"]
    defaults.apply_run(config, algorithm)
    return config
