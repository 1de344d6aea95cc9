"""MAML vs Multi-MAML vs MMAML on multimodal few-shot regression (Vuorio et al. 2019, Table 1).

For each mixture (2, 3 and 5 modes; the configs ``regression_<n>modes_5shot``) the three
methods are meta-trained for ``--steps`` meta-steps and evaluated on the same held-out tasks
(``--eval_tasks`` per mode); the Markdown table reports the query MSE after adaptation
± its 95% CI. Multi-MAML trains one MAML model per mode and is told each test task's mode (an
oracle), so it is the reference MMAML tries to match without the oracle.

  python benchmarks/regression_table.py                 # a few minutes on a CPU
  python benchmarks/regression_table.py --steps 20000 --modes 5 --out regression.md
  python benchmarks/regression_table.py --smoke         # tiny sizes, for the test suite
"""

from __future__ import annotations

import argparse
import sys
import time

METHODS = ("maml", "multi_maml", "mmaml")
LABELS = {"maml": "MAML", "multi_maml": "Multi-MAML (oracle mode)", "mmaml": "MMAML"}
SMOKE_OVERRIDES = (
    "num_steps=20",
    "log_every=10",
    "meta_batch_size=4",
    "eval_tasks_per_mode=10",
    "model.hidden_sizes=(16, 16)",
    "mmaml.task_hidden_sizes=(8,)",
    "mmaml.num_inner_steps=1",
    "mmaml.eval_num_inner_steps=1",
)


def run(num_modes: int, method: str, overrides=()) -> dict:
    """Trains and evaluates ``method`` on the ``num_modes``-mode mixture; one result dict."""
    from mmjax import configs
    from mmjax.train.builders import run_regression

    config = configs.apply_overrides(
        configs.get_config(f"regression_{num_modes}modes_5shot"), list(overrides)
    )
    start = time.perf_counter()
    result = run_regression(config, method)
    return dict(result, wall_seconds=time.perf_counter() - start, steps=config.num_steps)


def markdown_table(results: dict) -> str:
    """``results[(method, num_modes)]`` (from :func:`run`) as a Markdown table of MSE ± CI."""
    modes = sorted({m for _, m in results})
    lines = [
        "| method | " + " | ".join(f"{m} modes MSE" for m in modes) + " |",
        "|---|" + "---|" * len(modes),
    ]
    for method in METHODS:
        cells = []
        for m in modes:
            r = results.get((method, m))
            cells.append("–" if r is None else f"{r['mse']:.3f} ± {r['mse_ci95']:.3f}")
        lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", type=int, nargs="+", default=[2, 3, 5], choices=(2, 3, 5))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--steps", type=int, default=1000, help="meta-steps per model")
    parser.add_argument("--eval_tasks", type=int, default=200, help="test tasks per mode")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for the test suite")
    parser.add_argument("--out", default=None, help="also write the Markdown table here")
    args = parser.parse_args(argv)

    overrides = [f"num_steps={args.steps}", f"eval_tasks_per_mode={args.eval_tasks}"]
    if args.smoke:
        overrides = list(SMOKE_OVERRIDES)
    results = {}
    for num_modes in args.modes:
        for method in args.methods:
            r = run(num_modes, method, overrides)
            results[(method, num_modes)] = r
            print(
                f"{num_modes} modes, {method}: MSE {r['mse']:.3f} ± {r['mse_ci95']:.3f} "
                f"({r['wall_seconds']:.0f} s)",
                file=sys.stderr,
            )
    table = markdown_table(results)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")
    return results


if __name__ == "__main__":
    main()
