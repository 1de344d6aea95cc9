"""Scores a trained 20-way model on the 20 one-shot runs of Lake et al. (2015).

Protocol of the paper: in each run the learner sees one training image of each of the 20
characters, then classifies the 20 test images; the error rate of a run is the fraction
misclassified and the score is the mean error over the 20 runs. Here each run is one
20-way 1-shot episode (support: the 20 training images, labels 0..19; query: the 20 test
images labelled by ``class_labels.txt``) and the meta-learner's own ``evaluate`` adapts
and classifies it, all 20 runs in one ``vmap``-ed call. For MAML with batch-statistics
norm, query statistics are taken over the 20 test images of a run (transductive, as in
every MAML Omniglot result).
"""

from __future__ import annotations

import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.data.episodes import Episode
from mmjax.data.lake_runs import WAYS, LakeRuns, load_lake_runs
from mmjax.meta.learner import MetaLearner, Params
from mmjax.train.evaluate import confidence_interval

PAPER_ERROR_RATES: dict[str, float] = {
    "People": 0.045,
    "Bayesian Program Learning (BPL)": 0.033,
}
"""Mean error over the 20 runs reported by Lake, Salakhutdinov & Tenenbaum, "Human-level
concept learning through probabilistic program induction", Science 350(6266):1332-1338,
2015 (people 4.5%, BPL 3.3%)."""


def runs_to_episodes(
    runs: LakeRuns, *, multimodal: bool = False, stroke_length: int = 64
) -> Episode:
    """The runs as a batch of 20-way 1-shot episodes (leading axis: run).

    Args:
      runs: `LakeRuns`.
      multimodal: give the inputs as ``{"image", "strokes", "mask"}`` with the strokes absent
        (zeros, mask ``[1, 0]``), for a model trained on images + strokes (the runs have no
        stroke data).
      stroke_length: stroke sequence length of that model.

    Returns:
      `Episode` with support / query leaves ``[runs, 20, ...]``.
    """
    support = jnp.asarray(runs.train_images)
    query = jnp.asarray(runs.test_images)
    if multimodal:

        def wrap(images):
            lead = images.shape[:2]
            mask = jnp.broadcast_to(jnp.array([1.0, 0.0], jnp.float32), lead + (2,))
            return {
                "image": images,
                "strokes": jnp.zeros(lead + (stroke_length, 3), jnp.float32),
                "mask": mask,
            }

        support, query = wrap(support), wrap(query)
    num_runs = runs.test_labels.shape[0]
    return Episode(
        support_inputs=support,
        support_labels=jnp.broadcast_to(jnp.arange(WAYS, dtype=jnp.int32), (num_runs, WAYS)),
        query_inputs=query,
        query_labels=jnp.asarray(runs.test_labels, jnp.int32),
    )


def score_runs(
    learner: MetaLearner,
    params: Params,
    runs: LakeRuns,
    *,
    multimodal: bool = False,
    stroke_length: int = 64,
) -> dict:
    """Error rate per run and mean over runs (see the module docstring).

    Returns:
      dict with ``error_per_run`` ([runs] numpy), ``mean_error``, ``error_ci95`` (half-width
      of the 95% CI over runs), ``run_names`` and ``num_runs``.
    """
    episodes = runs_to_episodes(runs, multimodal=multimodal, stroke_length=stroke_length)
    metrics = jax.jit(learner.evaluate)(params, episodes)
    accuracy = np.asarray(metrics["accuracy"], dtype=np.float64)
    if accuracy.shape != (len(runs.run_names),):
        raise ValueError(
            f"learner.evaluate returned accuracy of shape {accuracy.shape}; expected one per "
            f"run ({len(runs.run_names)},)"
        )
    error = 1.0 - accuracy
    mean, half_width = confidence_interval(error)
    return {
        "error_per_run": error,
        "mean_error": mean,
        "error_ci95": half_width,
        "run_names": list(runs.run_names),
        "num_runs": len(runs.run_names),
    }


def score_workdir(
    workdir: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
) -> dict:
    """:func:`score_runs` for the latest checkpoint of the 20-way run in ``workdir``.

    Raises:
      ValueError: the run is not 20-way (its head has ``config.ways`` outputs).
    """
    from mmjax.train.restore import load_run  # noqa: PLC0415 (restore imports the trainer)

    config, _, learner, state = load_run(workdir, overrides)
    if config.ways != WAYS:
        raise ValueError(
            f"the run in {workdir!s} is {config.ways}-way; the Lake et al. runs need a "
            f"{WAYS}-way model (e.g. --config omniglot_maml_20w1s)"
        )
    runs = load_lake_runs(
        data_dir or config.data.data_dir or None, image_size=config.data.image_size
    )
    multimodal = "strokes" in tuple(config.data.get("modalities", ("image",)))
    result = score_runs(
        learner,
        state.params,
        runs,
        multimodal=multimodal,
        stroke_length=config.data.get("stroke_length", 64),
    )
    return dict(result, step=int(state.step), algorithm=learner.name, multimodal=multimodal)


def format_report(result: dict, name: str = "this model") -> str:
    """Markdown table: this model's mean error beside :data:`PAPER_ERROR_RATES`."""
    lines = [
        "| model | error over the 20 runs (%) |",
        "| --- | --- |",
        f"| {name} | {100 * result['mean_error']:.1f} ± {100 * result['error_ci95']:.1f} |",
    ]
    for model, error in PAPER_ERROR_RATES.items():
        lines.append(f"| {model} (Lake et al. 2015) | {100 * error:.1f} |")
    per_run = ", ".join(f"{100 * e:.0f}" for e in result["error_per_run"])
    return "\n".join(lines) + f"\n\nPer-run error (%): {per_run}\n"
