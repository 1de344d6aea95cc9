"""The 20 one-shot runs of Lake et al. (2015): loader on the real archive, scorer, errors."""

import io
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.data.lake_runs import LakeRuns, load_lake_runs, parse_class_labels, read_lake_runs
from mmjax.meta.learner import MetaLearner
from mmjax.train.one_shot_runs import PAPER_ERROR_RATES, format_report, runs_to_episodes, score_runs


@pytest.fixture(scope="module")
def runs():
    return load_lake_runs()


def test_real_runs_shapes_labels_and_ink(runs):
    assert runs.train_images.shape == (20, 20, 28, 28, 1)
    assert runs.test_images.shape == (20, 20, 28, 28, 1)
    assert runs.run_names == tuple(f"run{i:02d}" for i in range(1, 21))
    for labels in runs.test_labels:
        assert sorted(labels.tolist()) == list(range(20))
    # run01/test/item01.png is paired with run01/training/class08.png.
    assert runs.test_labels[0, 0] == 7
    for images in (runs.train_images, runs.test_images):
        assert images.dtype == np.float32 and images.min() >= 0 and images.max() <= 1
        assert 0.02 < images.mean() < 0.3  # ink = 1 on a 0 background
        assert np.all(images.reshape(400, -1).max(axis=1) > 0.5)  # no blank image


def nearest_neighbour_learner(shift=0):
    """Pixel 1-NN; ``shift`` != 0 predicts the label ``shift`` after the right one."""

    def evaluate(params, episodes):
        def task(e):
            s = e.support_inputs.reshape(e.support_inputs.shape[0], -1)
            q = e.query_inputs.reshape(e.query_inputs.shape[0], -1)
            distance = jnp.sum((q[:, None] - s[None]) ** 2, axis=-1)
            predicted = (e.support_labels[jnp.argmin(distance, axis=1)] + shift) % 20
            correct = predicted == e.query_labels
            return {"accuracy": jnp.mean(correct), "loss": 1.0 - jnp.mean(correct)}

        return jax.vmap(task)(episodes)

    return MetaLearner("nearest_neighbour", None, None, evaluate)


def synthetic_runs(num_runs=20, wrong_items=None):
    rng = np.random.default_rng(0)
    train = rng.uniform(size=(num_runs, 20, 6, 6, 1)).astype(np.float32)
    labels = np.stack([rng.permutation(20) for _ in range(num_runs)]).astype(np.int32)
    test = np.take_along_axis(train, labels[:, :, None, None, None], axis=1) + 0.01
    for run, count in (wrong_items or {}).items():
        # Make the first `count` test items copies of another class's training image.
        for item in range(count):
            test[run, item] = train[run, (labels[run, item] + 1) % 20]
    return LakeRuns(
        train, test.astype(np.float32), labels, tuple(f"run{i:02d}" for i in range(num_runs))
    )


def test_scorer_error_rates_on_trivially_correct_and_wrong_models():
    runs = synthetic_runs(wrong_items={0: 5, 3: 20, 7: 1})
    result = score_runs(nearest_neighbour_learner(), None, runs)
    expected = np.zeros(20)
    expected[[0, 3, 7]] = [5 / 20, 1.0, 1 / 20]
    np.testing.assert_allclose(result["error_per_run"], expected, atol=1e-7)
    np.testing.assert_allclose(result["mean_error"], expected.mean(), atol=1e-7)
    assert result["num_runs"] == 20 and result["error_ci95"] > 0
    wrong = score_runs(nearest_neighbour_learner(shift=1), None, synthetic_runs())
    np.testing.assert_allclose(wrong["error_per_run"], np.ones(20))
    report = format_report(result)
    assert "| 6.5 ± " in report and "Lake et al. 2015" in report
    assert PAPER_ERROR_RATES["People"] == 0.045


def test_pixel_nearest_neighbour_on_the_real_runs_is_far_from_human(runs):
    result = score_runs(nearest_neighbour_learner(), None, runs)
    assert result["error_per_run"].shape == (20,)
    # Far better than chance (95% error), far worse than people (4.5%).
    assert 0.4 < result["mean_error"] < 0.9


def test_multimodal_episodes_have_absent_strokes(runs):
    episodes = runs_to_episodes(runs, multimodal=True, stroke_length=16)
    assert episodes.support_inputs["strokes"].shape == (20, 20, 16, 3)
    np.testing.assert_array_equal(episodes.query_inputs["mask"][..., 0], 1)
    np.testing.assert_array_equal(episodes.query_inputs["mask"][..., 1], 0)
    np.testing.assert_array_equal(episodes.support_labels[5], np.arange(20))


def _zip(files):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    buffer.seek(0)
    return buffer


def test_bad_inputs_raise_clear_errors(tmp_path):
    good = "\n".join(
        f"run01/test/item{i:02d}.png run01/training/class{i:02d}.png" for i in range(1, 21)
    )
    np.testing.assert_array_equal(parse_class_labels(good, "run01"), np.arange(20))
    with pytest.raises(ValueError, match="line 2"):
        parse_class_labels(good.replace("item02.png", "item02.jpg"), "run01")
    with pytest.raises(ValueError, match="not a permutation"):
        parse_class_labels(good.replace("class02.png", "class01.png"), "run01")
    with pytest.raises(ValueError, match=r"no line for test items \[20\]"):
        parse_class_labels(good.rsplit("\n", 1)[0], "run01")
    with pytest.raises(ValueError, match="another run"):
        parse_class_labels(
            good.replace("run01/training/class03", "run02/training/class03"), "run01"
        )
    with pytest.raises(ValueError, match="no 'runNN/' folder"):
        read_lake_runs(_zip({"images/a.png": b""}))
    with pytest.raises(ValueError, match="run01 lacks 20 of its 20 training images"):
        read_lake_runs(_zip({"run01/class_labels.txt": good}))
    with pytest.raises(ValueError, match="image_size=0"):
        read_lake_runs(_zip({}), image_size=0)
    with pytest.raises(ValueError, match="test_images has shape"):
        LakeRuns(
            np.zeros((2, 20, 4, 4, 1)),
            np.zeros((2, 19, 4, 4, 1)),
            np.zeros((2, 20), int),
            ("a", "b"),
        )
    (tmp_path / "omniglot").mkdir()
    with pytest.raises(FileNotFoundError, match="all_runs.zip"):
        load_lake_runs(tmp_path)
