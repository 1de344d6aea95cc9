"""The measurement that sets ``conv_impl="auto"`` and ``task_batching="auto"`` on an accelerator.

Runs `benchmarks/maml_orders.py` over ``--conv_impl lax im2col`` x ``--task_batching vmap
scan 8`` for both orders at 1 and 5 inner steps, on Omniglot and mini-ImageNet shapes
(Conv-4), each combination in its own output folder, and gathers every row into
``OUT/gpu_choices.jsonl`` and one table ``OUT/gpu_choices.md``: tasks/s, device peak memory
(``memory_stats()``; host peak RSS on CPU), compile time and the fraction of the device's
measured matmul peak, with the fastest ``(conv_impl, task_batching)`` per dataset, order
and inner steps marked.

  python benchmarks/gpu_choices.py --out /tmp/gpu_choices            # on the GPU/TPU machine
  python benchmarks/gpu_choices.py --smoke --out /tmp/gpu_smoke      # tiny, on CPU
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import sys

DATASETS = ("omniglot", "miniimagenet")
CONV_IMPLS = ("lax", "im2col")
TASK_BATCHINGS = ("vmap", "scan", "8")
ORDERS = ("second", "first")
INNER_STEPS = (1, 5)


def _maml_orders():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "maml_orders.py")
    spec = importlib.util.spec_from_file_location("maml_orders", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def grid(args) -> list[dict]:
    """The combinations measured, in order: one `maml_orders` run each."""
    return [
        {"dataset": d, "conv_impl": c, "task_batching": t}
        for d, c, t in itertools.product(args.datasets, args.conv_impls, args.task_batchings)
    ]


def maml_orders_args(point: dict, args) -> list[str]:
    """The `maml_orders.py` command line of one combination."""
    out = os.path.join(
        args.out, f"{point['dataset']}-{point['conv_impl']}-{point['task_batching']}"
    )
    argv = ["--dataset", point["dataset"], "--conv_impl", point["conv_impl"]]
    argv += ["--task_batching", point["task_batching"], "--orders", *args.orders]
    argv += ["--inner_steps", *map(str, args.inner_steps), "--l2l", "no", "--out", out]
    return argv + (["--smoke"] if args.smoke else [])


def _memory(row: dict) -> str:
    if row.get("device_peak_bytes") is not None:
        return f"{row['device_peak_bytes'] / 2**20:.0f} MiB (device)"
    return f"{row['peak_memory_mb']:.0f} MiB (host RSS)"


def markdown(rows: list[dict]) -> str:
    """One table; the fastest combination of each (dataset, order, inner steps) in bold."""
    best = {}
    for r in rows:
        key = (r["dataset"], r["order"], r["inner_steps"])
        if key not in best or r["tasks_per_s"] > best[key]["tasks_per_s"]:
            best[key] = r
    device = rows[0]["device"] if rows else "?"
    lines = [
        (
            f"Device: {device} (backend {rows[0]['backend'] if rows else '?'}, jax "
            f"{rows[0]['jax'] if rows else '?'})."
        ),
        "",
        (
            "| dataset | order | inner steps | conv_impl | task_batching | tasks/s | peak memory "
            "| compile s | matmul-peak fraction |"
        ),
        "|---|---|---:|---|---|---:|---|---:|---:|",
    ]
    for r in rows:
        fastest = best[(r["dataset"], r["order"], r["inner_steps"])] is r
        speed = f"**{r['tasks_per_s']:.1f}**" if fastest else f"{r['tasks_per_s']:.1f}"
        lines.append(
            f"| {r['dataset']} | {r['order']} | {r['inner_steps']} | {r['conv_impl']} | "
            f"{r['task_batching']} | {speed} | {_memory(r)} | {r['compile_s']:.1f} | "
            f"{r['peak_fraction']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_choices_out", help="output directory")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--conv_impls", nargs="+", choices=CONV_IMPLS, default=list(CONV_IMPLS))
    parser.add_argument("--task_batchings", nargs="+", default=list(TASK_BATCHINGS))
    parser.add_argument("--orders", nargs="+", choices=ORDERS, default=list(ORDERS))
    parser.add_argument("--inner_steps", nargs="+", type=int, default=list(INNER_STEPS))
    parser.add_argument("--smoke", action="store_true", help="maml_orders --smoke sizes")
    parser.add_argument("--dry_run", action="store_true", help="print the commands only")
    return parser


def main(argv: list[str] | None = None) -> list[dict]:
    """Runs the grid; returns every row (also in ``OUT/gpu_choices.{jsonl,md}``)."""
    args = _parser().parse_args(argv)
    commands = [(point, maml_orders_args(point, args)) for point in grid(args)]
    if args.dry_run:
        for _, command in commands:
            print("python benchmarks/maml_orders.py " + " ".join(command))
        return []
    bench = _maml_orders()
    rows = []
    for point, command in commands:
        print(f"== {point}", flush=True)
        for row in bench.main(command):
            rows.append({**point, **row})
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu_choices.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    table = markdown(rows)
    with open(os.path.join(args.out, "gpu_choices.md"), "w") as f:
        f.write(table)
    print(table)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
