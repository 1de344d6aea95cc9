"""Evaluation under missing-modality conditions: the conditions reach the learner, the
episodes are paired across conditions, bad inputs raise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.meta.learner import MetaLearner
from mmjax.meta.maml import maml_learner
from mmjax.nn import Conv4, StrokeEncoder
from mmjax.nn.classifier import Classifier
from mmjax.nn.multimodal import MultimodalEncoder
from mmjax.train.evaluate import evaluate_learner
from mmjax.train.missing_modality import evaluate_conditions, format_conditions

SIZES = dict(ways=3, shots=1, queries=2)


@pytest.fixture(scope="module")
def data():
    key1, key2 = jax.random.split(jax.random.PRNGKey(0))
    return {
        "image": jax.random.uniform(key1, (8, 5, 10, 10, 1)),
        "strokes": jax.random.normal(key2, (8, 5, 12, 3)),
        "mask": jnp.ones((8, 5, 2)),
    }


def mask_probe():
    """Reports the strokes column of the query (accuracy) and support (loss) masks."""

    def evaluate(params, episodes):
        return {
            "accuracy": jnp.mean(episodes.query_inputs["mask"][..., 1], axis=-1),
            "loss": jnp.mean(episodes.support_inputs["mask"][..., 1], axis=-1),
        }

    return MetaLearner("probe", None, None, evaluate)


def test_each_condition_reaches_the_learner(data):
    results = evaluate_conditions(
        mask_probe(), None, data, jax.random.PRNGKey(1), **SIZES, num_episodes=6, batch_size=4
    )
    got = {c: (r["accuracy"], r["loss"]) for c, r in results.items()}
    assert got == {
        "both": (1.0, 1.0),
        "image_only": (0.0, 0.0),
        "strokes_only": (1.0, 1.0),
        "missing_in_support": (1.0, 0.0),
        "missing_in_query": (0.0, 1.0),
    }
    assert all(r["num_episodes"] == 6 and r["accuracy_ci95"] == 0 for r in results.values())
    table = format_conditions(results)
    assert "| missing_in_support | 100.00 | ± 0.00 | 6 |" in table


def test_both_condition_matches_evaluate_learner_on_the_same_episodes(data):
    model = Classifier(
        encoder=MultimodalEncoder(
            fusion="attention",
            features=8,
            image_encoder=Conv4(8, num_blocks=2),
            stroke_encoder=StrokeEncoder(8, num_layers=1),
        ),
        num_classes=3,
    )
    learner = maml_learner(model, inner_lr=0.4, num_inner_steps=1)
    params = learner.init(jax.random.PRNGKey(2), jax.tree.map(lambda x: x[0, :3], data))
    key = jax.random.PRNGKey(3)
    results = evaluate_conditions(
        learner,
        params,
        data,
        key,
        **SIZES,
        conditions=("both", "image_only"),
        num_episodes=20,
        batch_size=10,
    )
    reference = evaluate_learner(
        learner, params, data, key, **SIZES, num_episodes=20, batch_size=10
    )
    np.testing.assert_allclose(results["both"]["accuracy"], reference["accuracy"], rtol=1e-6)
    np.testing.assert_allclose(results["both"]["loss"], reference["loss"], rtol=1e-5)
    assert results["image_only"]["loss"] != pytest.approx(results["both"]["loss"], rel=1e-4)


def test_bad_inputs_raise_clear_errors(data):
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="multimodal split"):
        evaluate_conditions(mask_probe(), None, data["image"], key, **SIZES)
    with pytest.raises(ValueError, match="conditions="):
        evaluate_conditions(
            mask_probe(), None, data, key, **SIZES, conditions=("both", "audio_only")
        )
    with pytest.raises(ValueError, match="num_episodes must be >= 2"):
        evaluate_conditions(mask_probe(), None, data, key, **SIZES, num_episodes=1)
    with pytest.raises(ValueError, match="ways=9 exceeds"):
        evaluate_conditions(mask_probe(), None, data, key, ways=9, shots=1, queries=1)
