"""Image-benchmark configs: names, protocol values, and one finite meta-step per family."""

import pickle

import jax
import numpy as np
import pytest

from mmjax import configs
from mmjax.configs import fewshot_images
from mmjax.train import builders, loop


def test_every_generated_name_is_listed_and_loads():
    names = configs.available_configs()
    assert set(fewshot_images.CONFIG_NAMES) <= set(names)
    assert "fewshot_images" not in names and "omniglot_maml_5w1s" in names
    for dataset in fewshot_images.DATASETS:
        for algorithm in fewshot_images.ALGORITHMS:
            for shots in (1, 5):
                assert f"{dataset}_{algorithm}_5w{shots}s" in names
        assert f"{dataset}_protonet_resnet12_5w1s" in names
    with pytest.raises(ValueError, match="did you mean 'miniimagenet_maml_5w1s'"):
        configs.get_config("miniimagenet_mam_5w1s")


def test_protocol_values():
    maml = configs.get_config("miniimagenet_maml_5w1s")  # Finn et al. 2017
    assert (maml.data.name, maml.data.image_size) == ("miniimagenet", 84)
    assert (maml.model.encoder, maml.model.features, maml.model.pool) == ("conv4", 32, "max")
    assert (maml.maml.inner_lr, maml.maml.num_inner_steps, maml.maml.eval_num_inner_steps) == (
        0.01,
        5,
        10,
    )
    assert (maml.meta_batch_size, maml.queries, maml.num_steps) == (4, 15, 60_000)
    assert not maml.maml.first_order and not maml.augment.enabled
    assert configs.get_config("miniimagenet_maml_5w5s").meta_batch_size == 2
    assert configs.get_config("miniimagenet_fomaml_5w1s").maml.first_order
    reptile = configs.get_config("miniimagenet_reptile_5w1s")  # Nichol et al. 2018
    assert (reptile.reptile.num_inner_steps, reptile.reptile.eval_num_inner_steps) == (8, 50)
    assert (reptile.optimizer.name, reptile.optimizer.learning_rate) == ("sgd", 1.0)
    assert configs.get_config("miniimagenet_protonet_5w1s").model.features == 64
    assert configs.get_config("cifarfs_maml_5w1s").data.image_size == 32
    resnet = configs.get_config("fc100_protonet_resnet12_5w5s")
    assert resnet.model.widths == (64, 160, 320, 640) and resnet.augment.enabled
    assert resnet.augment.padding == 4 and resnet.shots == 5
    assert configs.get_config("cub_maml_resnet12_5w1s").model.widths == (32, 64, 128, 256)
    same = fewshot_images.get_config("dataset=cub,algorithm=anil,shots=5,backbone=conv4")
    assert same.to_dict() == configs.get_config("cub_anil_5w5s").to_dict()
    with pytest.raises(ValueError, match="algorithm='mam'"):
        fewshot_images.get_config("algorithm=mam")


def _write_miniimagenet(root):
    root.mkdir()
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        images = rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
        classes = {f"n{split}{c}": list(range(3 * c, 3 * c + 3)) for c in range(4)}
        with open(root / f"mini-imagenet-cache-{split}.pkl", "wb") as f:
            pickle.dump({"image_data": images, "class_dict": classes}, f)


FAMILIES = [
    ("miniimagenet_maml_5w1s", ["maml.num_inner_steps=1"]),
    ("miniimagenet_fomaml_5w1s", ["maml.num_inner_steps=1"]),
    ("miniimagenet_protonet_5w1s", []),
    ("miniimagenet_reptile_5w1s", ["reptile.num_inner_steps=1"]),
    ("miniimagenet_anil_5w1s", ["anil.num_inner_steps=1"]),
    ("miniimagenet_metasgd_5w1s", []),
    # First order: a second-order ResNet-12 step compiles for ~1 min on 2 CPU cores.
    (
        "miniimagenet_maml_resnet12_5w1s",
        ["maml.num_inner_steps=1", "maml.first_order=True", "model.widths=(2, 2)"],
    ),
    ("miniimagenet_protonet_resnet12_5w1s", ["model.widths=(2, 2)", "augment.padding=2"]),
]


@pytest.mark.parametrize("name, extra", FAMILIES, ids=[n for n, _ in FAMILIES])
def test_one_meta_step_is_finite(tmp_path, name, extra):
    _write_miniimagenet(tmp_path / "miniimagenet")
    tiny = [
        f"data.data_dir={tmp_path}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.image_size=16",
        "model.features=4",
        "ways=2",
        "queries=1",
        "meta_batch_size=2",
    ]
    config = configs.apply_overrides(configs.get_config(name), tiny + extra)
    splits, learner, optimizer, state = loop.build_run(config)
    assert splits["train"].shape == (4, 3, 16, 16, 3)
    step = loop.make_train_step(config, learner, optimizer)
    new_state, metrics = step(jax.tree.map(lambda x: x.copy(), state), splits["train"])
    assert bool(metrics["finite"]) and np.isfinite(float(metrics["loss"]))
    moved = jax.tree.map(
        lambda a, b: np.any(np.asarray(a) != np.asarray(b)), new_state.params, state.params
    )
    assert any(jax.tree.leaves(moved))  # the meta-step changed the parameters
    expected = "ResNet12" if "resnet12" in name else "Conv4"
    assert type(builders.build_model(config).encoder).__name__ == expected


def test_load_splits_dispatches_every_benchmark(tmp_path):
    """config.data.name -> the right loader, split sizes and RGB shapes on device."""
    from tests.data.test_cifar_fewshot import _mock
    from tests.data.test_tieredimagenet import SIZES, _write

    _write(tmp_path / "tieredimagenet")
    overrides = [f"data.data_dir={tmp_path}", f"data.cache_dir={tmp_path / 'cache'}"]
    tiered = configs.apply_overrides(
        configs.get_config("tieredimagenet_protonet_5w1s"), overrides + ["data.image_size=9"]
    )
    splits = builders.load_splits(tiered)
    assert [splits[s].shape for s in ("train", "val", "test")] == [
        (len(SIZES[s]), min(SIZES[s]), 9, 9, 3) for s in ("train", "val", "test")
    ]
    with _mock():
        for name, sizes in (("cifarfs", (64, 16, 20)), ("fc100", (60, 20, 20))):
            config = configs.apply_overrides(configs.get_config(f"{name}_maml_5w1s"), overrides)
            splits = builders.load_splits(config)
            assert tuple(splits[s].shape[0] for s in ("train", "val", "test")) == sizes
            assert splits["test"].shape[1:] == (3, 32, 32, 3)
    with pytest.raises(FileNotFoundError, match="CUB-200-2011"):
        builders.load_splits(
            configs.apply_overrides(
                configs.get_config("cub_maml_5w1s"), overrides + ["data.source='archive'"]
            )
        )
