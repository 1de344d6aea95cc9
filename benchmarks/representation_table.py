"""Representation benchmark: pretrained image + stroke encoders scored on few-shot episodes.

For each objective of :data:`mmjax.representation.PRETRAIN_OBJECTIVES` (``none`` = random
initialisation), pretrains the encoders on drawings of the meta-train classes (image + stroke
Omniglot), freezes them and reports on the meta-test alphabets:

* 5-way 1-shot ProtoNet accuracy ± 95% CI over ``--episodes`` episodes, both modalities present;
* image -> strokes retrieval: each meta-test drawing's image looks for its own stroke sequence
  among those of all meta-test drawings (recall@1 / @5, cosine similarity).

Deep CCA follows its evaluation protocol (Andrew et al. 2013): a linear CCA of the two
views' network outputs is fitted on ``--cca_drawings`` meta-train drawings, and both
evaluations use the canonical space (each view projected onto all its canonical directions,
the number the loss correlates; the fused embedding is the mean of the projected views).

Writes ``representation_table.md``, ``representation_table.json`` and
``vae_reconstructions.png`` (for each VAE: reconstructions and strokes -> image generation on
meta-test drawings) under ``--out``. ``--smoke`` runs at toy sizes in seconds (checks the
pipeline; its numbers mean nothing).

    python benchmarks/representation_table.py --steps 300 --out representation_results
    python benchmarks/representation_table.py --smoke --out /tmp/rep
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mmjax.data import omniglot_multimodal_splits  # noqa: E402
from mmjax.representation import (  # noqa: E402
    PRETRAIN_OBJECTIVES,
    cross_modal_retrieval,
    make_objective,
    pretrain,
    protonet_accuracies,
)
from mmjax.representation.evaluate import CCAEmbed, fit_cca_on_drawings  # noqa: E402
from mmjax.train import confidence_interval  # noqa: E402

NAMES = {
    "none": "random init (no pretraining)",
    "autoencoder": "autoencoder (concat fusion)",
    "vae_poe": "VAE, product of experts",
    "vae_moe": "VAE, mixture of experts",
    "vae_mopoe": "VAE, MoPoE",
    "contrastive": "contrastive (InfoNCE)",
    "dcca": "deep CCA",
    "adversarial": "contrastive + adversarial alignment",
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objectives", default=",".join(PRETRAIN_OBJECTIVES))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--latent", type=int, default=32)
    parser.add_argument("--image_blocks", type=int, default=4, help="Conv-4 blocks")
    parser.add_argument("--stroke_layers", type=int, default=3, help="stroke conv layers")
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument(
        "--cca_drawings", type=int, default=4096, help="meta-train drawings of deep CCA's fit"
    )
    parser.add_argument("--retrieval_classes", type=int, default=0, help="0 = all test classes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--out", default="representation_results")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    objectives = [o for o in args.objectives.split(",") if o]
    unknown = [o for o in objectives if o not in PRETRAIN_OBJECTIVES]
    if unknown or not objectives:
        parser.error(f"--objectives {args.objectives!r}: unknown {unknown}; valid {PRETRAIN_OBJECTIVES}")
    args.objectives = objectives
    if args.smoke:
        args.steps, args.batch_size, args.features, args.latent = 2, 8, 4, 4
        args.image_blocks, args.stroke_layers = 2, 1
        args.episodes, args.retrieval_classes = 4, 3
    return args


def render_strokes(ax, sequence: np.ndarray) -> None:
    """Draws a (dx, dy, pen_lift) sequence; a pen lift starts a new line."""
    xy = np.cumsum(sequence[:, :2], axis=0)
    starts = np.flatnonzero(sequence[:, 2] > 0.5).tolist() + [len(sequence)]
    if starts[0] != 0:
        starts = [0] + starts
    for a, b in zip(starts[:-1], starts[1:]):
        ax.plot(xy[a:b, 0], xy[a:b, 1], "-", color="k", linewidth=1.2)
    ax.set_aspect("equal")


def vae_figure(vaes: dict, data: dict, path: str, *, count: int = 8) -> None:
    """Meta-test drawings: image, strokes, then for each VAE its reconstruction from both
    modalities, from the image alone and the image generated from the strokes alone."""
    rows = 2 + 3 * len(vaes)
    fig, axes = plt.subplots(rows, count, figsize=(1.2 * count, 1.25 * rows))
    axes = np.asarray(axes).reshape(rows, count)
    batch = {k: np.asarray(v[:count, 0]) for k, v in data.items()}  # one drawing per class
    labels = ["image", "strokes"]
    images = []
    for name, (objective, params) in vaes.items():

        @jax.jit
        def generate(params, inputs, objective=objective):
            z = objective.embed(params, inputs)  # posterior mean
            decoded = objective.model.apply(params["model"], z, method="decode")
            return jax.nn.sigmoid(decoded["image"])

        for label, factor in (
            ("both", (1, 1)),
            ("image only", (1, 0)),
            ("strokes → image", (0, 1)),
        ):
            inputs = dict(batch, mask=batch["mask"] * np.asarray(factor, np.float32))
            images.append(np.asarray(generate(params, inputs)))
            labels.append(f"{name[4:]}: {label}")
    for i in range(count):
        axes[0, i].imshow(batch["image"][i, ..., 0], cmap="gray_r", vmin=0, vmax=1)
        render_strokes(axes[1, i], batch["strokes"][i])
        for r, image in enumerate(images):
            axes[2 + r, i].imshow(image[i, ..., 0], cmap="gray_r", vmin=0, vmax=1)
    for r in range(rows):
        axes[r, 0].set_ylabel(labels[r], rotation=0, ha="right", va="center", fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Multimodal VAE on meta-test drawings (posterior means)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run_objective(name: str, args, train: dict, test: dict, retrieval: dict) -> tuple[dict, tuple]:
    objective = make_objective(
        name,
        features=args.features,
        latent=args.latent,
        image_blocks=args.image_blocks,
        stroke_layers=args.stroke_layers,
    )
    key = jax.random.PRNGKey(args.seed)
    start = time.perf_counter()
    params, history = pretrain(
        objective,
        train,
        key,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
    )
    jax.block_until_ready(params)
    seconds = time.perf_counter() - start
    embed, eval_params, extra = objective.embed, params, {}
    if name == "dcca":  # evaluate in the canonical space of a CCA fitted on meta-train drawings
        projection = fit_cca_on_drawings(
            objective.embed,
            params,
            train,
            jax.random.PRNGKey(args.seed + 3),
            num_drawings=args.cca_drawings,
            dim=None,  # all directions: make_objective's cca_components default
        )
        embed, eval_params = CCAEmbed(objective.embed), {"encoder": params, "cca": projection}
        extra["cca_correlations"] = [float(c) for c in projection.correlations]
        with_both = int(np.all(np.asarray(train["mask"]) != 0, axis=-1).sum())
        extra["cca_drawings"] = min(args.cca_drawings, with_both)
    accuracies = protonet_accuracies(
        embed,
        eval_params,
        test,
        jax.random.PRNGKey(args.seed + 1),
        ways=5,
        shots=1,
        queries=5,
        num_episodes=args.episodes,
    )
    accuracy, ci = confidence_interval(accuracies) if len(accuracies) > 1 else (accuracies[0], 0.0)
    recall = cross_modal_retrieval(embed, eval_params, retrieval, jax.random.PRNGKey(2))
    window = history[-max(1, len(history) // 10) :]
    row = dict(
        objective=name,
        name=NAMES[name],
        steps=args.steps if name != "none" else 0,
        first_loss=history[0]["loss"] if history else None,
        final_loss=float(np.mean([h["loss"] for h in window])) if history else None,
        accuracy=float(accuracy),
        accuracy_ci95=float(ci),
        episodes=len(accuracies),
        recall_at_1=recall["recall@1"],
        recall_at_5=recall["recall@5"],
        median_rank=recall["median_rank"],
        gallery=recall["gallery"],
        pretrain_seconds=seconds,
        **extra,
    )
    print(json.dumps(row), flush=True)
    return row, (objective, params)


def markdown(rows: list[dict], args) -> str:
    gallery = rows[0]["gallery"]
    lines = [
        "| objective | loss (first → last) | 5-way 1-shot ProtoNet (%) | image→strokes R@1 (%) "
        "| R@5 (%) | pretrain time |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        loss = "—" if r["first_loss"] is None else f"{r['first_loss']:.3g} → {r['final_loss']:.3g}"
        lines.append(
            f"| {r['name']} | {loss} | {100 * r['accuracy']:.2f} ± {100 * r['accuracy_ci95']:.2f} "
            f"| {100 * r['recall_at_1']:.2f} | {100 * r['recall_at_5']:.2f} "
            f"| {r['pretrain_seconds']:.0f} s |"
        )
    lines.append("")
    lines.append(
        f"{args.steps} pretraining steps of {args.batch_size} drawings (Adam {args.learning_rate}), "
        f"Conv-4 with {args.image_blocks} blocks / {args.stroke_layers}-layer conv stroke "
        f"encoder, {args.features} features, latent {args.latent}; "
        f"{rows[0]['episodes']} meta-test episodes (95% CI); retrieval among {gallery} "
        f"meta-test stroke sequences (chance R@1 = {100 / gallery:.2f}%)."
    )
    fitted = [r["cca_drawings"] for r in rows if "cca_drawings" in r]
    if fitted:
        lines[-1] += (
            f" Deep CCA is evaluated in the canonical space of a linear CCA of its two outputs "
            f"fitted on {fitted[0]} meta-train drawings (Andrew et al. 2013)."
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    splits = omniglot_multimodal_splits(args.data_dir)
    train = jax.tree.map(jnp.asarray, splits["train"])
    test = jax.tree.map(jnp.asarray, splits["test"])
    if args.smoke:
        train = jax.tree.map(lambda x: x[:20], train)
        test = jax.tree.map(lambda x: x[:10], test)
    retrieval = test
    if args.retrieval_classes:
        retrieval = jax.tree.map(lambda x: x[: args.retrieval_classes], test)
    rows, vaes = [], {}
    for name in args.objectives:
        row, trained = run_objective(name, args, train, test, retrieval)
        rows.append(row)
        if name.startswith("vae_"):
            vaes[name] = trained
    with open(os.path.join(args.out, "representation_table.md"), "w") as f:
        f.write(markdown(rows, args))
    with open(os.path.join(args.out, "representation_table.json"), "w") as f:
        json.dump({"args": vars(args), "rows": rows}, f, indent=2)
    if vaes:
        vae_figure(vaes, test, os.path.join(args.out, "vae_reconstructions.png"))
    print(markdown(rows, args))
    return rows


if __name__ == "__main__":
    main()
