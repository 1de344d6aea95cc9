"""Fusion benchmark: 1-shot accuracy on the meta-test alphabets, images + pen strokes.

For each number of ways, meta-trains (MAML, ``omniglot_mm_maml_{5,20}w1s``) and tests:

* the single-modality baselines: the same multimodal model with one modality forced off
  by the mask in training and test (``train_condition="image_only"`` / ``"strokes_only"``;
  modality dropout cannot drop a sample's only modality, so they are trained once);
* every fusion method, without and with modality dropout (``--dropout``), tested with both
  modalities present.

Writes ``fusion_table.md`` (accuracy ± 95% CI), ``fusion_table.json`` and a bar chart
``fusion_table.png`` under ``--out``; each run's workdir is kept in ``--out/runs/``, so an
interrupted benchmark resumes. ``--smoke`` runs everything at toy sizes (a few steps, tiny
networks): it checks the pipeline, its numbers mean nothing.

    python benchmarks/fusion_table.py --steps 20000 --out fusion_results
    python benchmarks/fusion_table.py --smoke --methods concat
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mmjax import configs  # noqa: E402
from mmjax.fusion import FUSION_METHODS  # noqa: E402
from mmjax.train import loop  # noqa: E402
from mmjax.train.missing_modality import evaluate_missing_modality  # noqa: E402

BASE_CONFIGS = {5: "omniglot_mm_maml_5w1s", 20: "omniglot_mm_maml_20w1s"}
SMOKE = [
    "model.features=4",
    "model.stroke_features=4",
    "model.fusion_features=4",
    "maml.first_order=True",
    "maml.eval_num_inner_steps=1",
    "meta_batch_size=2",
    "queries=1",
    "val_episodes=2",
    "eval_batch_size=4",
]


BASELINES = ("image_only", "strokes_only")


def variants(
    methods: Sequence[str], dropout: float, baselines: Sequence[str] = BASELINES
) -> list[dict]:
    """The rows of the table: name, fusion, training settings, test condition."""
    rows = [
        dict(name=b.replace("_", " "), fusion="concat", dropout=0.0, train=b) for b in baselines
    ]
    for method in methods:
        for rate in dict.fromkeys((0.0, dropout)):
            rows.append(dict(name=method, fusion=method, dropout=rate, train="both"))
    return rows


def run_variant(variant: dict, ways: int, args, out: str) -> dict:
    """Meta-trains one variant (or resumes it) and tests it under its condition.

    The finished row is stored as ``row.json`` in the run's workdir together with the
    overrides that produced it; a later call with the same overrides returns it as is.
    """
    overrides = [
        f"num_steps={args.steps}",
        f"model.fusion={variant['fusion']}",
        f"modality_dropout={variant['dropout']}",
        f"train_condition={variant['train']}",
        f"test_episodes={args.episodes}",
    ]
    if args.smoke:
        overrides = SMOKE + overrides + [f"eval_every={args.steps + 1}", "log_every=1"]
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    overrides += args.overrides + args.ways_overrides.get(ways, [])
    config = configs.apply_overrides(configs.get_config(BASE_CONFIGS[ways]), overrides)
    tag = f"{ways}w_{variant['fusion']}_{variant['train']}_drop{variant['dropout']:g}"
    workdir = os.path.join(out, "runs", tag)
    row_path = os.path.join(workdir, "row.json")
    if os.path.exists(row_path):
        with open(row_path) as f:
            row = json.load(f)
        if row.get("overrides") == overrides:
            return row
    results = loop.train(config, workdir, progress=False)
    if "interrupted" in results:  # SIGTERM/SIGINT: the trainer saved a checkpoint; stop here.
        raise SystemExit(
            f"{tag}: interrupted by signal {results['interrupted']}; "
            "run the same command again to resume"
        )
    if variant["train"] == "both":
        accuracy, ci = results["test_accuracy"], results["test_accuracy_ci95"]
    else:  # the trainer's final test keeps both modalities; test the baseline as trained.
        test = evaluate_missing_modality(
            workdir, conditions=(variant["train"],), num_episodes=args.episodes
        )[variant["train"]]
        accuracy, ci = test["accuracy"], test["accuracy_ci95"]
    row = dict(
        variant, ways=ways, accuracy=accuracy, accuracy_ci95=ci, workdir=workdir, overrides=overrides
    )
    os.makedirs(workdir, exist_ok=True)
    with open(row_path + ".tmp", "w") as f:
        json.dump(row, f, indent=2)
    os.replace(row_path + ".tmp", row_path)
    return row


def markdown(rows: list[dict], ways: Sequence[int], steps: int) -> str:
    """One line per (model, dropout), one column per number of ways."""
    header = "| model | modality dropout | " + " | ".join(f"{w}-way 1-shot (%)" for w in ways)
    lines = [
        f"MAML, {steps} meta-training steps, meta-test alphabets; accuracy ± 95% CI.",
        "",
        header + " |",
        "| --- | --- | " + " | ".join("---" for _ in ways) + " |",
    ]
    keys = list(dict.fromkeys((r["name"], r["dropout"]) for r in rows))
    for name, rate in keys:
        cells = []
        for w in ways:
            match = [r for r in rows if (r["name"], r["dropout"], r["ways"]) == (name, rate, w)]
            cells.append(
                f"{100 * match[0]['accuracy']:.2f} ± {100 * match[0]['accuracy_ci95']:.2f}"
                if match
                else "—"
            )
        lines.append(f"| {name} | {rate:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(rows: list[dict], ways: Sequence[int], path: str) -> None:
    """Grouped bars (one group per model and dropout rate, one bar per ways) with 95% CIs."""
    keys = list(dict.fromkeys((r["name"], r["dropout"]) for r in rows))
    fig, ax = plt.subplots(figsize=(min(14, max(6, 0.35 * len(keys) * len(ways))), 4.5))
    width = 0.8 / len(ways)
    for i, w in enumerate(ways):
        values, errors = [], []
        for key in keys:
            match = [r for r in rows if (r["name"], r["dropout"], r["ways"]) == (*key, w)]
            values.append(100 * match[0]["accuracy"] if match else np.nan)
            errors.append(100 * match[0]["accuracy_ci95"] if match else 0)
        positions = np.arange(len(keys)) + (i - (len(ways) - 1) / 2) * width
        ax.bar(positions, values, width, yerr=errors, capsize=2, label=f"{w}-way 1-shot")
    labels = [name if rate == 0 else f"{name}\n+dropout {rate:g}" for name, rate in keys]
    ax.set_xticks(np.arange(len(keys)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend()
    ax.set_title("Image + stroke fusion on Omniglot (MAML)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="meta-training steps per run")
    parser.add_argument("--ways", default=None, help="comma-separated, from 5,20 (default both)")
    parser.add_argument(
        "--methods", default=None, help=f"comma-separated from {','.join(FUSION_METHODS)}"
    )
    parser.add_argument(
        "--baselines", default="image_only,strokes_only", help="comma-separated, or 'none'"
    )
    parser.add_argument("--dropout", type=float, default=0.25, help="modality dropout rate")
    parser.add_argument("--episodes", type=int, default=None, help="test episodes per run")
    parser.add_argument("--out", default="fusion_table", help="output folder")
    parser.add_argument("--data_dir", default=None, help="folder holding omniglot/")
    parser.add_argument("--smoke", action="store_true", help="toy sizes: checks the pipeline")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every run, e.g. --set maml.first_order=True",
    )
    parser.add_argument(
        "--set_ways",
        dest="ways_overrides",
        action="append",
        default=[],
        metavar="WAYS:KEY=VALUE",
        help="config override for the runs of one number of ways, e.g. --set_ways 20:meta_batch_size=4",
    )
    args = parser.parse_args(argv)
    args.steps = args.steps or (2 if args.smoke else 20_000)
    args.episodes = args.episodes or (4 if args.smoke else 600)
    args.ways = [int(w) for w in (args.ways or ("5" if args.smoke else "5,20")).split(",")]
    args.methods = (args.methods or ",".join(FUSION_METHODS)).split(",")
    args.baselines = [] if args.baselines == "none" else args.baselines.split(",")
    for baseline in args.baselines:
        if baseline not in BASELINES:
            parser.error(f"--baselines: {baseline!r} is not one of {BASELINES} or 'none'")
    if not 0 <= args.dropout <= 0.5:
        parser.error(f"--dropout {args.dropout} must be in [0, 0.5]")
    for w in args.ways:
        if w not in BASE_CONFIGS:
            parser.error(f"--ways: {w} is not one of {sorted(BASE_CONFIGS)}")
    for method in args.methods:
        if method not in FUSION_METHODS:
            parser.error(f"--methods: {method!r} is not one of {sorted(FUSION_METHODS)}")
    ways_overrides: dict[int, list[str]] = {}
    for item in args.ways_overrides:
        ways_text, sep, override = item.partition(":")
        if not sep or not ways_text.isdigit() or "=" not in override:
            parser.error(f"--set_ways {item!r}: expected WAYS:KEY=VALUE, e.g. 20:meta_batch_size=4")
        if int(ways_text) not in args.ways:
            parser.error(f"--set_ways {item!r}: {ways_text}-way is not among --ways {args.ways}")
        ways_overrides.setdefault(int(ways_text), []).append(override)
    args.ways_overrides = ways_overrides
    if args.steps < 1 or args.episodes < 2:
        parser.error("--steps must be >= 1 and --episodes >= 2")
    return args


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for ways in args.ways:
        for variant in variants(args.methods, args.dropout, args.baselines):
            row = run_variant(variant, ways, args, args.out)
            print(
                f"{ways}-way {row['name']} (dropout {row['dropout']:g}): "
                f"{100 * row['accuracy']:.2f}% ± {100 * row['accuracy_ci95']:.2f}%",
                flush=True,
            )
            rows.append(row)
    table = markdown(rows, sorted(args.ways), args.steps)
    with open(os.path.join(args.out, "fusion_table.md"), "w") as f:
        f.write(table)
    with open(os.path.join(args.out, "fusion_table.json"), "w") as f:
        json.dump(rows, f, indent=2)
    bar_chart(rows, sorted(args.ways), os.path.join(args.out, "fusion_table.png"))
    print(table)
    return rows


if __name__ == "__main__":
    main()
