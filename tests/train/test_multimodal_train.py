"""Multimodal meta-training on real image + stroke Omniglot through the episodic trainer."""

import json

import jax
import numpy as np
import pytest

from mmjax import configs
from mmjax.train import loop
from mmjax.train.missing_modality import evaluate_missing_modality
from tests.conftest import full_optimisation

TINY_MM = [
    "model.features=16",
    "model.stroke_features=16",
    "model.fusion_features=16",
    "maml.first_order=True",
    "meta_batch_size=4",
    "queries=3",
    "log_every=50",
    "eval_every=1000",
    "checkpoint_every=1000",
    "val_episodes=10",
    "test_episodes=40",
    "eval_batch_size=20",
]


def tiny_mm_config(*extra):
    return configs.apply_overrides(
        configs.get_config("omniglot_mm_maml_5w1s"), TINY_MM + list(extra)
    )


@pytest.fixture(scope="module")
def mm_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("mm")
    config = tiny_mm_config(
        "num_steps=300", "modality_dropout=0.25", "optimizer.learning_rate=0.003"
    )
    with full_optimisation():  # 300 meta-steps: the full optimisation pays (tests/conftest.py)
        return workdir, loop.train(config, workdir, progress=False)


def test_multimodal_run_with_dropout_lowers_the_loss(mm_run):
    workdir, results = mm_run
    train = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    train = [r for r in train if r["split"] == "train"]
    assert [r["step"] for r in train] == [50, 100, 150, 200, 250, 300]
    assert np.isfinite([r["loss"] for r in train]).all()
    # 300 first-order steps of a 16-wide model: about 1.61 -> 1.43, accuracy 0.27 -> 0.40.
    assert train[-1]["loss"] < 0.93 * train[0]["loss"]
    assert train[-1]["accuracy"] > train[0]["accuracy"] + 0.07
    # 5-way chance is 0.2 on unseen alphabets (measured 0.52 +- 0.05).
    assert results["test_accuracy"] - results["test_accuracy_ci95"] > 0.3
    assert results["steps"] == 300


@pytest.mark.usefixtures("full_opt")  # compiled as the run's own final test was
def test_missing_modality_conditions_on_the_trained_run(mm_run):
    workdir, results = mm_run
    table = evaluate_missing_modality(workdir, num_episodes=40)
    assert list(table) == [
        "both",
        "image_only",
        "strokes_only",
        "missing_in_support",
        "missing_in_query",
    ]
    # Same key and episodes as the trainer's final test: "both" reproduces it.
    np.testing.assert_allclose(table["both"]["accuracy"], results["test_accuracy"], rtol=1e-6)
    for row in table.values():
        assert 0.2 < row["accuracy"] <= 1.0 and 0 < row["accuracy_ci95"] < 0.2
    # Removing a modality changes the predictions (the masks reach the model).
    assert len({round(r["accuracy"], 6) for r in table.values()}) > 1


def test_zero_dropout_keeps_the_single_modality_step_identical():
    # modality_dropout=0 and train_condition="both" must not touch the step (nor its key
    # sequence): the traced programs are identical, so resumed runs stay bit-identical.
    base = configs.apply_overrides(
        configs.get_config("quick"),
        ["model.features=4", "maml.first_order=True", "meta_batch_size=2", "queries=2"],
    )
    with_fields = configs.apply_overrides(base, [])
    with_fields.modality_dropout = 0.0
    with_fields.train_condition = "both"
    splits, learner, optimizer, state = loop.build_run(base)
    programs = [
        str(jax.make_jaxpr(loop.make_train_step(c, learner, optimizer))(state, splits["train"]))
        for c in (base, with_fields)
    ]
    assert programs[0] == programs[1]
    assert "random_split" in programs[0] or "threefry" in programs[0]


def test_bad_dropout_rate_and_condition_raise():
    config = tiny_mm_config("modality_dropout=0.7")
    with pytest.raises(ValueError, match="rate=0.7"):
        loop.make_train_step(config, None, None)
    config = tiny_mm_config("train_condition='images'")
    with pytest.raises(ValueError, match="condition='images'"):
        loop.make_train_step(config, None, None)
