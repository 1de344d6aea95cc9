"""MAML meta-step speed: tasks/s, compile time and memory, second vs first order.

Each configuration runs in a fresh subprocess so that its peak memory is its own. For each
one the script reports the compile time of the jitted meta-step (``lower().compile()``),
the median wall time of ``--repeats`` steps after a warm-up (``block_until_ready``),
tasks/s, the process's peak RSS, XLA's temp-buffer size from ``memory_analysis()`` and its
FLOP count from ``cost_analysis()``.

  python benchmarks/maml_step.py                       # Conv-4, 5-way 1-shot, batch 32
  python benchmarks/maml_step.py --inner_steps 1 5 --remat both --markdown
  python benchmarks/maml_step.py --smoke               # tiny, for the test suite
  python benchmarks/maml_step.py --l2l_python /path/to/venv/bin/python   # + learn2learn

With ``--l2l_python`` (or when torch and learn2learn import in this interpreter), every
configuration is also timed with learn2learn's MAML + OmniglotCNN on identical shapes
(``benchmarks/l2l_reference.py``) and the speed ratio is reported.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time


def _child(spec: dict) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    from mmjax.meta import maml
    from mmjax.nn import Classifier, Conv4, resolve_conv_impl

    ways, shots, queries, batch = spec["ways"], spec["shots"], spec["queries"], spec["meta_batch"]
    size = spec["image_size"]
    model = Classifier(
        Conv4(features=spec["features"], conv_impl=spec["conv_impl"]), num_classes=ways
    )
    keys = jax.random.split(jax.random.PRNGKey(0), 5)
    episodes = maml.Episode(
        jax.random.uniform(keys[0], (batch, ways * shots, size, size, 1)),
        jnp.tile(jnp.repeat(jnp.arange(ways), shots), (batch, 1)),
        jax.random.uniform(keys[1], (batch, ways * queries, size, size, 1)),
        jnp.tile(jnp.repeat(jnp.arange(ways), queries), (batch, 1)),
    )
    params = model.init(keys[2], episodes.support_inputs[0])
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(params)
    step = maml.make_meta_train_step(
        maml.classification_loss(model.apply),
        optimizer,
        inner_lr=0.4,
        num_steps=spec["inner_steps"],
        first_order=spec["order"] == "first",
        remat=spec["remat"],
    )
    start = time.perf_counter()
    compiled = step.lower(params, opt_state, episodes).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    memory = compiled.memory_analysis()
    params, opt_state, _ = compiled(params, opt_state, episodes)  # warm-up
    jax.block_until_ready(params)
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        params, opt_state, metrics = compiled(params, opt_state, episodes)
        jax.block_until_ready((params, metrics))
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    return dict(
        spec,
        conv_impl_resolved=resolve_conv_impl(spec["conv_impl"]),
        backend=jax.default_backend(),
        device=str(jax.devices()[0].device_kind),
        compile_s=round(compile_s, 3),
        step_s=round(median, 5),
        tasks_per_s=round(batch / median, 2),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        temp_mb=round(memory.temp_size_in_bytes / 2**20, 1) if memory is not None else None,
        gflops_per_step=round(flops / 1e9, 3),
        achieved_gflops_s=round(flops / 1e9 / median, 2),
    )


def _run(spec: dict) -> dict:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one device: the benchmark measures one meta-step
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
    )
    if out.returncode:
        raise RuntimeError(f"benchmark child failed for {spec}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _run_l2l(python: str, spec: dict) -> dict:
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "l2l_reference.py")
    flags = []
    for name in (
        "order",
        "inner_steps",
        "ways",
        "shots",
        "queries",
        "meta_batch",
        "features",
        "image_size",
        "repeats",
    ):
        flags += [f"--{name}", str(spec[name])]
    out = subprocess.run([python, script, *flags], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"learn2learn reference failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _default_l2l_python() -> str | None:
    import importlib.util

    if importlib.util.find_spec("torch") and importlib.util.find_spec("learn2learn"):
        return sys.executable
    return None


def markdown(rows: list[dict]) -> str:
    """Rows as a Markdown table."""
    head = (
        "| order | inner steps | remat | ways | shots | queries | meta-batch | tasks/s | "
        "s/step | compile s | peak RSS MB | XLA temp MB | GFLOP/step |"
    )
    with_l2l = any("l2l_tasks_per_s" in r for r in rows)
    if with_l2l:
        head += " learn2learn tasks/s | speed-up |"
    lines = [head, "|" + "|".join("---" for _ in range(head.count("|") - 1)) + "|"]
    for r in rows:
        lines.append(
            f"| {r['order']} | {r['inner_steps']} | {'yes' if r['remat'] else 'no'} | "
            f"{r['ways']} | {r['shots']} | {r['queries']} | {r['meta_batch']} | "
            f"{r['tasks_per_s']:.1f} | {r['step_s']:.3f} | {r['compile_s']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | {r['temp_mb']} | {r['gflops_per_step']:.2f} |"
            + (
                f" {r.get('l2l_tasks_per_s', '-')} | {r.get('speedup_vs_l2l', '-')} |"
                if with_l2l
                else ""
            )
        )
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument(
        "--orders", nargs="+", default=["second", "first"], choices=["second", "first"]
    )
    parser.add_argument("--inner_steps", nargs="+", type=int, default=[1, 5])
    parser.add_argument("--remat", choices=["no", "yes", "both"], default="no")
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--meta_batch", type=int, default=32)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--image_size", type=int, default=28)
    parser.add_argument("--conv_impl", default="auto", choices=["auto", "im2col", "lax"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--json", help="append JSON lines here")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument(
        "--l2l_python",
        default=None,
        help="interpreter with torch + learn2learn for the side-by-side timing",
    )
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return []
    if args.smoke:
        args.features, args.meta_batch, args.queries, args.repeats = 8, 2, 2, 2
        args.inner_steps, args.image_size = [1], 14
    remats = {"no": [False], "yes": [True], "both": [False, True]}[args.remat]
    rows = []
    for order, steps, remat in itertools.product(args.orders, args.inner_steps, remats):
        spec = dict(
            order=order,
            inner_steps=steps,
            remat=remat,
            ways=args.ways,
            shots=args.shots,
            queries=args.queries,
            meta_batch=args.meta_batch,
            features=args.features,
            image_size=args.image_size,
            conv_impl=args.conv_impl,
            repeats=args.repeats,
        )
        row = _run(spec)
        l2l_python = args.l2l_python or _default_l2l_python()
        if l2l_python and not remat:
            reference = _run_l2l(l2l_python, spec)
            row["l2l_tasks_per_s"] = reference["tasks_per_s"]
            row["speedup_vs_l2l"] = round(row["tasks_per_s"] / reference["tasks_per_s"], 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")
    if args.markdown:
        print(
            f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"backend {rows[0]['backend']} ({rows[0]['device']}), conv {rows[0]['conv_impl_resolved']}"
        )
        print(markdown(rows))
    return rows


if __name__ == "__main__":
    main()
