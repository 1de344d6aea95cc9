"""Few-shot accuracy and meta-training speed of every algorithm with the real trainer.

Each algorithm is trained by ``mmjax.train.loop.train`` from its shipped config
(``omniglot_<algorithm>_<ways>w1s``, MAML's and FOMAML's included) for ``--steps`` meta-steps,
then evaluated on the test alphabets (MAML and FOMAML also with non-transductive batch norm,
``eval_batch_norm="with_support"``). The Markdown table reports test accuracy ± 95% CI and
meta-training tasks/s (the mean of ``tasks_per_second`` over the logged training windows of
``metrics.jsonl``, the first window, which includes compilation, left out when there are more).

  python benchmarks/algorithms_table.py --steps 2000 --out algorithms.md
  python benchmarks/algorithms_table.py --ways 20 --algorithms protonet maml --steps 5000
  python benchmarks/algorithms_table.py --smoke          # tiny models, a few hundred steps
  python benchmarks/algorithms_table.py --steps 400 --set model.features=32 --set queries=5

Run it on a quiet machine: the reported tasks/s are wall-clock figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ALGORITHMS = (
    "maml",
    "fomaml",
    "reptile",
    "metasgd",
    "anil",
    "protonet",
    "protonet_cosine",
    "relationnet",
    "mmaml",
)

# --smoke: Conv-4 with 16 features, and settings that learn within a few hundred steps (first
# order for the MAML family, larger outer steps; later overrides win); shared with
# tests/benchmarks/test_algorithms_smoke.py.
SMOKE_OVERRIDES = (
    "model.features=16",
    "meta_batch_size=4",
    "queries=3",
    "num_steps=200",
    "optimizer.learning_rate=0.005",
    "log_every=50",
    "eval_every=100000",
    "checkpoint_every=100000",
    "val_episodes=10",
    "test_episodes=40",
    "eval_batch_size=40",
)
SMOKE_SETTINGS = {
    "maml": ("maml.first_order=True",),
    "fomaml": (),
    "reptile": (
        "optimizer.name='adam'",
        "reptile.inner_optimizer='sgd'",
        "reptile.inner_lr=0.5",
        "reptile.num_inner_steps=3",
        "reptile.eval_num_inner_steps=5",
        "num_steps=300",
    ),
    "metasgd": ("metasgd.first_order=True",),
    "anil": (),
    "protonet": (),
    "protonet_cosine": (),
    "relationnet": ("relationnet.hidden_sizes=(64,)",),
    "mmaml": ("mmaml.first_order=True", "mmaml.eval_num_inner_steps=1"),
}


def config_name(algorithm: str, ways: int) -> str:
    """The shipped config of ``algorithm`` for ``ways``-way 1-shot Omniglot."""
    return f"omniglot_{algorithm}_{ways}w1s"


def tasks_per_second(metrics_path: str) -> float:
    """Mean ``tasks_per_second`` of the train records (the first left out if there are more)."""
    with open(metrics_path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    speeds = [r["tasks_per_second"] for r in records if r.get("split") == "train"]
    if not speeds:
        raise ValueError(f"{metrics_path} has no train record with tasks_per_second")
    return statistics.mean(speeds[1:] if len(speeds) > 1 else speeds)


def run_algorithm(
    algorithm: str, workdir: str, *, ways: int = 5, steps: int | None = None, overrides=()
) -> dict:
    """Trains ``algorithm`` from its config in ``workdir``; returns one table row."""
    from mmjax import configs
    from mmjax.train import loop

    extra = list(overrides) + ([f"num_steps={steps}"] if steps else [])
    config = configs.apply_overrides(configs.get_config(config_name(algorithm, ways)), extra)
    start = time.perf_counter()
    results = loop.train(config, workdir, progress=False)
    wall_seconds = time.perf_counter() - start
    row = {
        "algorithm": algorithm,
        "ways": ways,
        "steps": results["steps"],
        "test_accuracy": results["test_accuracy"],
        "test_accuracy_ci95": results["test_accuracy_ci95"],
        "test_episodes": results["test_episodes"],
        "tasks_per_second": tasks_per_second(os.path.join(workdir, "metrics.jsonl")),
        "wall_seconds": wall_seconds,
        "test_batch_norm": results.get("test_batch_norm", "transductive"),
    }
    section = config.get(config.algorithm)
    if section is not None and "eval_batch_norm" in section:
        # The same checkpoint, each query normalised with the support set (non-transductive).
        from mmjax.train.restore import evaluate_checkpoint

        other = evaluate_checkpoint(
            workdir,
            num_episodes=config.test_episodes,
            overrides=[f"{config.algorithm}.eval_batch_norm='with_support'"],
        )
        row["test_accuracy_with_support"] = other["accuracy"]
        row["test_accuracy_with_support_ci95"] = other["accuracy_ci95"]
    return row


def markdown_table(rows: list[dict]) -> str:
    """Rows of :func:`run_algorithm` as a Markdown table."""
    lines = [
        (
            "| algorithm | ways | steps | test accuracy (%) | meta-train tasks/s | wall (s) "
            "| with-support BN accuracy (%) |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        other = "-"
        if "test_accuracy_with_support" in r:
            other = (
                f"{100 * r['test_accuracy_with_support']:.2f} "
                f"± {100 * r['test_accuracy_with_support_ci95']:.2f}"
            )
        lines.append(
            f"| {r['algorithm']} | {r['ways']} | {r['steps']} | "
            f"{100 * r['test_accuracy']:.2f} ± {100 * r['test_accuracy_ci95']:.2f} | "
            f"{r['tasks_per_second']:.1f} | {r['wall_seconds']:.0f} | {other} |"
        )
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    parser.add_argument("--ways", type=int, default=5, choices=(5, 20))
    parser.add_argument("--steps", type=int, default=None, help="meta-steps (default: config's)")
    parser.add_argument("--smoke", action="store_true", help="tiny models, a few hundred steps")
    parser.add_argument("--out", default=None, help="also write the Markdown table here")
    parser.add_argument("--workdir", default=None, help="keep the runs here (default: temp)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override applied to every algorithm",
    )
    args = parser.parse_args(argv)

    from mmjax import configs

    names = [a for a in args.algorithms if config_name(a, args.ways) in configs.available_configs()]
    skipped = sorted(set(args.algorithms) - set(names))
    if skipped:
        print(f"no {args.ways}-way config for {skipped}; skipped", file=sys.stderr)
    root = args.workdir or tempfile.mkdtemp(prefix="mmjax-algorithms-")
    rows = []
    for algorithm in names:
        overrides = SMOKE_OVERRIDES + SMOKE_SETTINGS[algorithm] if args.smoke else ()
        overrides = tuple(args.overrides) + tuple(overrides)
        rows.append(
            run_algorithm(
                algorithm,
                os.path.join(root, f"{algorithm}_{args.ways}w"),
                ways=args.ways,
                steps=args.steps,
                overrides=overrides,
            )
        )
        print(
            f"{algorithm}: {100 * rows[-1]['test_accuracy']:.2f}% "
            f"± {100 * rows[-1]['test_accuracy_ci95']:.2f}%",
            file=sys.stderr,
        )
    table = markdown_table(rows)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")
    return rows


if __name__ == "__main__":
    main()
