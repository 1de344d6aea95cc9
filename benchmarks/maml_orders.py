"""Second- vs first-order MAML: speed, memory, FLOPs and accuracy in one table.

For Conv-4 on Omniglot shapes, every configuration (order x inner steps x remat x ways x
shots x queries x meta-batch) is measured in its own subprocess (peak RSS is per process):

* ``compile_s``: ``jit(step).lower(...).compile()`` of the whole meta-step;
* ``s_per_step`` / ``tasks_per_s``: median of ``--repeats`` steps after a warm-up, each
  ended by ``block_until_ready``;
* ``peak_memory_mb``: the process's peak RSS on CPU, the device's ``peak_bytes_in_use`` on
  GPU/TPU; ``device_peak_bytes``: the device's ``peak_bytes_in_use`` in bytes (null on CPU,
  `mmjax.train.throughput.device_peak_bytes`); ``xla_temp_mb``: the compiled step's
  temporary buffers (``memory_analysis()``);
* ``gflop_per_step``: XLA's ``cost_analysis()`` of the meta-step lowered with the inner
  ``lax.scan`` *fully unrolled* (a rolled loop's body is counted once, so the count would
  not grow with inner steps); ``peak_fraction``: achieved GFLOP/s over the GFLOP/s of a
  large f32 matmul measured on the same backend at the start of the run.

With ``--accuracy`` each configuration is also meta-trained on real Omniglot
(``mmjax.train.loop.train``, the ``quick`` config with the row's shapes) for
``--train_steps`` steps and its meta-test accuracy +- 95% CI is added to the row.

When torch + learn2learn import (in this interpreter or in ``--l2l_python``), each
non-remat configuration is also timed with learn2learn's ``MAML`` + ``OmniglotCNN`` on
identical shapes (``benchmarks/l2l_reference.py``), alternating processes ``--rounds``
times, and the speed ratio is reported. ``implicit`` rows are timed against TorchOpt's iMAML
instead (``benchmarks/torchopt_reference.py``: the same learn2learn network, the same proximal
inner loop, ``torchopt.diff.implicit.custom_root`` with CG; ``--torchopt_python``); the row's
``reference`` and the table's ``reference`` column name the framework each ratio is against.

``--dataset miniimagenet`` uses mini-ImageNet's shapes and Finn et al.'s sizes (84x84x3,
Conv-4 with 32 filters and max-pool, 5 inner steps of lr 0.01, meta-batch 4; random pixels)
and learn2learn's ``MiniImagenetCNN``; ``--backbone resnet12`` times ResNet-12
(``--resnet_widths``) instead of Conv-4 (learn2learn: its ``ResNet12``).

Writes ``OUT/maml_orders.jsonl`` (one JSON object per configuration), ``OUT/maml_orders.md``
and ``OUT/time_vs_inner_steps.png``, ``OUT/memory_vs_inner_steps.png``.

  python benchmarks/maml_orders.py --out /tmp/maml_orders --inner_steps 1 2 5 10 \
      --remat both --remat_at 10 --l2l_python /path/to/l2l-venv/bin/python
  python benchmarks/maml_orders.py --smoke --out /tmp/smoke            # tiny, < 1 min
  python benchmarks/maml_orders.py --dataset miniimagenet --shots 1 5 --out /tmp/mini
  python benchmarks/maml_orders.py --dataset miniimagenet --backbone resnet12 --out /tmp/r12
  python benchmarks/maml_orders.py --accuracy --inner_steps 1 --train_steps 300 --out /tmp/acc
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from mmjax import storage  # output files: local folders or gs:// (etils.epath)
from mmjax.train import throughput

ORDERS = ("second", "first")
# --dataset -> defaults applied unless the flag is given (image_size, channels, Conv-4 pool,
# features, inner lr, inner steps, meta-batch); learn2learn's model for the same shapes.
DATASET_SHAPES = {
    "omniglot": {"image_size": 28, "channels": 1, "pool": "stride", "l2l_model": "OmniglotCNN"},
    "miniimagenet": {
        "image_size": 84,
        "channels": 3,
        "pool": "max",
        "features": 32,
        "inner_lr": 0.01,
        "inner_steps": [5],
        "meta_batch": [4],
        "l2l_model": "MiniImagenetCNN",
    },
}

# Meta-gradient modes (mmjax.meta.meta_gradients) beside the two orders; "second" is "exact".
MODES = ORDERS + ("truncated", "implicit")
META_GRADIENT_OF = {"second": "exact", "first": "first_order"}
QUALITY_STEPS = (1, 2, 5, 10, 20)
CONV_IMPLS = ("auto", "im2col", "lax")


# --------------------------------------------------------------------------- measurement


def matmul_peak_gflops(size: int = 2048, repeats: int = 7) -> float:
    """GFLOP/s of the fastest of ``repeats`` ``[size, size] @ [size, size]`` f32 matmuls."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32)
    matmul = jax.jit(jnp.matmul).lower(a, b).compile()
    jax.block_until_ready(matmul(a, b))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(matmul(a, b))
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def _peak_memory_mb(device_peak: int | None) -> tuple[float, str]:
    """MB and source of the peak: the device's reading (``device_peak_bytes``) where there
    is one, else this process's peak RSS (`mmjax.train.throughput`)."""
    from mmjax.train.throughput import host_peak_rss_bytes

    if device_peak is not None:
        return device_peak / 2**20, "device peak_bytes_in_use"
    return host_peak_rss_bytes() / 2**20, "host peak RSS"


def _build(spec: dict):
    """Model, synthetic episodes of the row's shapes, params and optimizer state."""
    import jax
    import jax.numpy as jnp
    import optax

    from mmjax.meta import maml
    from mmjax.nn import Classifier, Conv4, ResNet12

    ways, shots, queries, batch = spec["ways"], spec["shots"], spec["queries"], spec["meta_batch"]
    size, channels = spec["image_size"], spec.get("channels", 1)
    if spec.get("backbone", "conv4") == "resnet12":
        encoder = ResNet12(widths=tuple(spec["widths"]), conv_impl=spec["conv_impl"])
    else:
        encoder = Conv4(
            features=spec["features"],
            num_blocks=spec.get("num_blocks", 4),
            pool=spec.get("pool", "stride"),
            conv_impl=spec["conv_impl"],
        )
    model = Classifier(encoder, num_classes=ways)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    episodes = maml.Episode(
        jax.random.uniform(keys[0], (batch, ways * shots, size, size, channels)),
        jnp.tile(jnp.repeat(jnp.arange(ways), shots), (batch, 1)),
        jax.random.uniform(keys[1], (batch, ways * queries, size, size, channels)),
        jnp.tile(jnp.repeat(jnp.arange(ways), queries), (batch, 1)),
    )
    params = model.init(keys[2], episodes.support_inputs[0])
    optimizer = optax.adam(1e-3)
    return model, episodes, params, optimizer, optimizer.init(params)


def measure(spec: dict) -> dict:
    """Times, compiles, counts and sizes one configuration in this process."""
    import jax

    from mmjax.meta import make_step, maml
    from mmjax.meta.task_batching import resolve_task_batching
    from mmjax.nn.conv import resolve_conv_impl
    from mmjax.train.throughput import device_peak_bytes

    model, episodes, params, optimizer, opt_state = _build(spec)
    learner = functools.partial(
        maml.maml_learner,
        model,
        inner_lr=spec.get("inner_lr", 0.4),
        num_inner_steps=spec["inner_steps"],
        remat=spec["remat"],
        **meta_gradient_settings(spec),
    )
    # FLOPs: lower (no compile) with the inner loop unrolled and the tasks vmapped, so every
    # inner step and every task counts (a scan's body is counted once); same computation.
    unrolled = make_step(learner(unroll=True, task_batching="vmap"), optimizer, jit=False)
    cost = jax.jit(unrolled).lower(params, opt_state, episodes).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")

    task_batching = spec.get("task_batching", "auto")  # a chunk size arrives as an int
    step = make_step(learner(unroll=spec["unroll"], task_batching=task_batching), optimizer)
    start = time.perf_counter()
    compiled = step.lower(params, opt_state, episodes).compile()
    compile_s = time.perf_counter() - start
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
    device_peak = device_peak_bytes()
    peak_mb, memory_source = _peak_memory_mb(device_peak)
    achieved = flops / 1e9 / median
    return dict(
        spec,
        conv_impl_resolved=resolve_conv_impl(spec["conv_impl"]),
        task_batching_resolved=resolve_task_batching(task_batching),
        backend=jax.default_backend(),
        device=str(jax.devices()[0].device_kind),
        jax=jax.__version__,
        tasks_per_s=round(spec["meta_batch"] / median, 2),
        s_per_step=_seconds(median),
        s_per_step_all=[_seconds(t) for t in times],
        compile_s=round(compile_s, 3),
        peak_memory_mb=round(peak_mb, 1),
        memory_source=memory_source,
        device_peak_bytes=device_peak,
        xla_temp_mb=round(memory.temp_size_in_bytes / 2**20, 1) if memory is not None else None,
        gflop_per_step=round(flops / 1e9, 6),
        flop_count="cost_analysis, inner loop unrolled",
        achieved_gflop_s=round(achieved, 2),
        peak_fraction=round(achieved / spec["matmul_peak_gflop_s"], 4),
    )


def train_accuracy(spec: dict) -> dict:
    """Meta-trains the row's configuration on Omniglot; meta-test accuracy +- 95% CI."""
    from mmjax.configs import quick
    from mmjax.train.loop import train

    config = quick.get_config()
    config.ways, config.shots = spec["ways"], spec["shots"]
    config.queries, config.meta_batch_size = spec["queries"], spec["meta_batch"]
    config.model.features, config.model.conv_impl = spec["features"], spec["conv_impl"]
    config.maml.first_order = spec["order"] == "first"
    if spec["order"] not in ORDERS:
        config.maml.meta_gradient = spec["order"]
        config.maml.truncate = min(spec.get("truncate", 1), spec["inner_steps"])
        config.maml.lam = spec.get("lam", 1.0)
        config.maml.cg_steps = spec.get("cg_steps", 20)
    config.maml.num_inner_steps = spec["inner_steps"]
    config.maml.remat = spec["remat"]
    config.num_steps = spec["train_steps"]
    config.log_every = max(1, min(config.log_every, spec["train_steps"]))
    config.eval_every = spec["train_steps"] + 1  # no validation passes: the budget is training
    config.checkpoint_every = spec["train_steps"]
    config.test_episodes = spec["test_episodes"]
    workdir = spec["workdir"]
    start = time.perf_counter()
    results = train(config, workdir, progress=False)
    train_s = time.perf_counter() - start
    # The same checkpoint evaluated non-transductively (each query with the support set).
    from mmjax.train.restore import evaluate_checkpoint

    other = evaluate_checkpoint(
        workdir,
        num_episodes=spec["test_episodes"],
        overrides=["maml.eval_batch_norm='with_support'"],
    )
    return dict(
        test_accuracy=round(float(results["test_accuracy"]), 4),
        test_accuracy_ci95=round(float(results["test_accuracy_ci95"]), 4),
        test_batch_norm=results.get("test_batch_norm", "transductive"),
        test_accuracy_with_support=round(float(other["accuracy"]), 4),
        test_accuracy_with_support_ci95=round(float(other["accuracy_ci95"]), 4),
        test_episodes=int(results["test_episodes"]),
        train_steps=int(results["steps"]),
        train_s=round(train_s, 1),
        eval_inner_steps=int(config.maml.eval_num_inner_steps),
    )


def meta_gradient_settings(spec: dict) -> dict:
    """``maml_learner`` settings of the row's mode (``spec["order"]``, one of MODES).

    ``"truncated"`` differentiates the last ``min(spec["truncate"], inner_steps)`` steps;
    ``"implicit"`` uses ``spec["lam"]`` and ``spec["cg_steps"]``.
    """
    from mmjax.meta.meta_gradients import MetaGradient

    order = spec["order"]
    if order in ORDERS:
        return {"first_order": order == "first"}
    truncate = min(spec.get("truncate", 1), spec["inner_steps"])
    return {
        "meta_gradient": MetaGradient(
            order,
            truncate=truncate if order == "truncated" else None,
            lam=spec.get("lam", 1.0),
            cg_steps=spec.get("cg_steps", 20),
        )
    }


def _quality_episodes(spec: dict):
    """A task batch for gradient quality: synthetic (the timing shapes) or real Omniglot."""
    import jax

    model, episodes, params, _, _ = _build(spec)
    if spec.get("quality_data", "synthetic") == "omniglot":
        from mmjax.data import omniglot_splits, sample_episodes, to_device

        train = to_device(omniglot_splits(image_size=spec["image_size"])["train"])
        episodes = sample_episodes(
            jax.random.PRNGKey(1),
            train,
            batch_size=spec["meta_batch"],
            ways=spec["ways"],
            shots=spec["shots"],
            queries=spec["queries"],
        )
    return model, episodes, params


def gradient_quality(spec: dict) -> list[dict]:
    """Cosine similarity and relative L2 error of each mode's meta-gradient to the exact one.

    On one task batch, at the initialisation and after ``spec["quality_train_steps"]`` exact
    (second-order, 1 inner step) Adam meta-steps, for every count in
    ``spec["quality_inner_steps"]`` and every mode in ``spec["modes"]``. ``implicit`` rows also
    carry the error to the exact gradient of the same proximal inner loop unrolled
    (``implicit_vs_unrolled_rel_error``), which the implicit gradient approximates.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from mmjax.meta import make_step, maml

    model, episodes, params = _quality_episodes(spec)
    loss_fn = maml.classification_loss(model.apply)
    optimizer = optax.adam(1e-3)
    train_step = make_step(
        maml.maml_learner(model, inner_lr=0.4, num_inner_steps=1, task_batching="vmap"),
        optimizer,
    )
    trained, opt_state = jax.tree.map(jnp.copy, params), optimizer.init(params)
    for _ in range(spec["quality_train_steps"]):
        trained, opt_state, _ = train_step(trained, opt_state, episodes)

    def flat(tree):  # traced: one vector of the gradient
        return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])

    def grad_fn(steps, **settings):  # compiled once, used at both stages
        return jax.jit(
            lambda q: flat(
                maml.meta_grad(
                    q,
                    episodes,
                    loss_fn=loss_fn,
                    inner_lr=0.4,
                    num_steps=steps,
                    task_batching="vmap",
                    **settings,
                )[0]
            )
        )

    def compare(g, ref):
        g, ref = np.asarray(g, np.float64), np.asarray(ref, np.float64)
        cos = float(g @ ref / (np.linalg.norm(g) * np.linalg.norm(ref) + 1e-30))
        return round(cos, 6), float(f"{np.linalg.norm(g - ref) / np.linalg.norm(ref):.4g}")

    stages = (("init", params), ("trained", trained))
    rows = []
    for steps in spec["quality_inner_steps"]:
        exact_fn = grad_fn(steps)
        exact = {stage: exact_fn(p) for stage, p in stages}
        for mode in spec["modes"]:
            mode_fn = grad_fn(
                steps, **meta_gradient_settings(dict(spec, order=mode, inner_steps=steps))
            )
            for stage, p in stages:
                g = mode_fn(p)
                cos, rel = compare(g, exact[stage])
                row = {"stage": stage, "mode": mode, "inner_steps": steps}
                row.update(cosine=cos, rel_l2_error=rel)
                if mode == "truncated":
                    row["truncate"] = min(spec.get("truncate", 1), steps)
                if mode == "implicit":
                    lam = spec.get("lam", 1.0)
                    row.update(lam=lam, cg_steps=spec.get("cg_steps", 20))
                    row["implicit_vs_unrolled_rel_error"] = compare(
                        g, _unrolled_proximal_grad(loss_fn, p, episodes, steps, lam)
                    )[1]
                rows.append(row)
    rows.sort(key=lambda r: (r["stage"] != "init", r["inner_steps"]))
    return rows


def _unrolled_proximal_grad(loss_fn, params, episodes, steps: int, lam: float):
    """Exact meta-gradient through ``steps`` of GD on the proximal objective (iMAML's target)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mmjax.meta import maml
    from mmjax.meta.task_batching import grad_over_tasks

    def per_task(theta, episode):
        def proximal(phi, inputs, labels):
            loss, metrics = loss_fn(phi, inputs, labels)
            distance = sum(
                jnp.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(phi), jax.tree.leaves(theta))
            )
            return loss + 0.5 * lam * distance, metrics

        adapted, _ = maml.adapt(
            theta,
            episode.support_inputs,
            episode.support_labels,
            loss_fn=proximal,
            inner_lr=0.4,
            num_steps=steps,
        )
        return loss_fn(adapted, episode.query_inputs, episode.query_labels)

    grads, _ = jax.jit(lambda p: grad_over_tasks(per_task, p, episodes, "vmap"))(params)
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(grads)])


# --------------------------------------------------------------------------- processes


def _child_env() -> dict:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags)  # one device: the benchmark measures one meta-step
    return env


# A child measures one configuration; the slowest (second order, many inner steps, a
# reference framework's per-task loop) take minutes, none should take hours.
CHILD_TIMEOUT_S = 3 * 3600


def _run_json(cmd: list[str], what: str, env: dict | None = None) -> dict:
    """Runs ``cmd`` (at most ``CHILD_TIMEOUT_S``); returns the JSON of its last stdout line."""
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=CHILD_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(f"{what} did not finish within {CHILD_TIMEOUT_S} s: {cmd}") from err
    if out.returncode:
        raise RuntimeError(f"{what} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _in_child(task: str, spec: dict) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", task, json.dumps(spec)]
    return _run_json(cmd, f"{task} child for {spec}", env=_child_env())


_REFERENCE_FLAGS = (
    "inner_steps", "ways", "shots", "queries", "meta_batch", "features", "image_size",
    "repeats", "threads",
)  # fmt: skip


def _run_reference(python: str, script: str, what: str, spec: dict, required, optional) -> dict:
    """One reference-script run (``script`` beside this file) on ``spec``'s shapes; its JSON."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), script)
    flags = []
    for name in required:
        flags += [f"--{name}", str(spec[name])]
    for name in optional:  # mini-ImageNet / ResNet-12 rows
        if name in spec:
            flags += [f"--{name}", str(spec[name])]
    return _run_json([python, path, *flags], what)


def _run_l2l(python: str, spec: dict) -> dict:
    if spec["order"] == "implicit":
        return _run_torchopt(python, spec)
    return _run_reference(
        python, "l2l_reference.py", "learn2learn reference", spec,
        ("order", *_REFERENCE_FLAGS), ("dataset", "backbone", "inner_lr"),
    )  # fmt: skip


def _run_torchopt(python: str, spec: dict) -> dict:
    """One ``torchopt_reference.py`` run (TorchOpt iMAML) on ``spec``'s shapes; its JSON line."""
    return _run_reference(
        python, "torchopt_reference.py", "TorchOpt reference", spec,
        (*_REFERENCE_FLAGS, "lam", "cg_steps"), ("dataset", "inner_lr"),
    )  # fmt: skip


def _has_torchopt(python: str) -> bool:
    """Whether torch, learn2learn and torchopt import in interpreter ``python``."""
    try:
        out = subprocess.run(
            [python, "-c", "import torch, learn2learn, torchopt"],
            capture_output=True,
            timeout=300,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


def _torchopt_python(args, l2l_python: str | None) -> str | None:
    """The interpreter for implicit rows' TorchOpt reference, or None (no reference)."""
    if args.l2l == "no" or "implicit" not in args.orders:
        return None
    if args.torchopt_python:
        if not _has_torchopt(args.torchopt_python):
            raise ValueError(
                f"--torchopt_python {args.torchopt_python}: torch, learn2learn and torchopt "
                "must import there (pip install torchopt learn2learn)"
            )
        return args.torchopt_python
    if l2l_python and _has_torchopt(l2l_python):
        return l2l_python
    return None


def _l2l_python(args) -> str | None:
    if args.l2l == "no":
        return None
    if args.l2l_python:
        return args.l2l_python
    if importlib.util.find_spec("torch") and importlib.util.find_spec("learn2learn"):
        return sys.executable
    if args.l2l == "yes":
        raise ValueError(
            "--l2l yes: torch/learn2learn do not import here; pass --l2l_python PYTHON "
            "(an interpreter that has them) or set MMJAX_L2L_PYTHON"
        )
    return None


# --------------------------------------------------------------------------- output


REFERENCE_NAMES = {"learn2learn": "learn2learn", "torchopt": "TorchOpt"}


def markdown(rows: list[dict], header: str = "") -> str:
    """Rows as a Markdown table (speed, memory, FLOPs; learn2learn and accuracy if present)."""
    head = (
        "| order | inner steps | remat | ways | shots | queries | meta-batch | tasks/s | s/step "
        "| compile s | peak MB | XLA temp MB | GFLOP/step | % matmul peak |"
    )
    with_l2l = any("l2l_tasks_per_s" in r for r in rows)
    with_reference = any(r.get("reference", "learn2learn") != "learn2learn" for r in rows)
    with_acc = any("test_accuracy" in r for r in rows)
    if with_reference:  # some ratio is against TorchOpt: name each row's reference
        head += " reference | reference tasks/s | speed-up |"
    elif with_l2l:
        head += " learn2learn tasks/s | speed-up |"
    if with_acc:
        head += " train steps | test accuracy (95% CI) | with-support BN accuracy |"
    lines = [header] if header else []
    lines += [head, "|" + "|".join("---" for _ in range(head.count("|") - 1)) + "|"]
    for r in rows:
        temp = "-" if r.get("xla_temp_mb") is None else f"{r['xla_temp_mb']:.0f}"
        line = (
            f"| {r['order']} | {r['inner_steps']} | {'yes' if r['remat'] else 'no'} | "
            f"{r['ways']} | {r['shots']} | {r['queries']} | {r['meta_batch']} | "
            f"{r['tasks_per_s']:.1f} | {r['s_per_step']:.3f} | {r['compile_s']:.1f} | "
            f"{r['peak_memory_mb']:.0f} | {temp} | {r['gflop_per_step']:.2f} | "
            f"{100 * r['peak_fraction']:.0f}% |"
        )
        if with_l2l:
            if with_reference:
                line += f" {REFERENCE_NAMES.get(r.get('reference'), '-')} |"
            if "l2l_tasks_per_s" in r:
                line += f" {r['l2l_tasks_per_s']:.1f} | {r['speedup_vs_l2l']:.2f}x |"
            else:
                line += " - | - |"
        if with_acc:
            if "test_accuracy" in r:
                line += (
                    f" {r['train_steps']} | {100 * r['test_accuracy']:.1f}% "
                    f"± {100 * r['test_accuracy_ci95']:.1f} |"
                )
                if "test_accuracy_with_support" in r:
                    line += (
                        f" {100 * r['test_accuracy_with_support']:.1f}% "
                        f"± {100 * r['test_accuracy_with_support_ci95']:.1f} |"
                    )
                else:
                    line += " - |"
            else:
                line += " - | - | - |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], out_dir: str) -> list[str]:
    """Time and memory vs inner steps: one line per order, remat dashed, learn2learn dotted.

    Only rows of the first (ways, shots, queries, meta-batch) shape are drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shape_of = lambda r: (r["ways"], r["shots"], r["queries"], r["meta_batch"])  # noqa: E731
    shape = shape_of(rows[0])
    rows = [r for r in rows if shape_of(r) == shape]
    colors = {"second": "tab:blue", "first": "tab:orange", "truncated": "tab:green",
              "implicit": "tab:red"}  # fmt: skip
    paths = []
    for key, ylabel, name in (
        ("s_per_step", "seconds per meta-step", "time_vs_inner_steps.png"),
        (
            "peak_memory_mb",
            f"peak memory, MB ({rows[0]['memory_source']})",
            "memory_vs_inner_steps.png",
        ),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for order in MODES:
            for remat in (False, True):
                line = sorted(
                    (r for r in rows if r["order"] == order and r["remat"] == remat),
                    key=lambda r: r["inner_steps"],
                )
                if not line:
                    continue
                ax.plot(
                    [r["inner_steps"] for r in line],
                    [r[key] for r in line],
                    marker="o",
                    linestyle="--" if remat else "-",
                    color=colors[order],
                    label=f"mmjax {order} order" + (", remat" if remat else ""),
                )
            l2l_key = {"s_per_step": "l2l_s_per_step", "peak_memory_mb": "l2l_peak_memory_mb"}[key]
            line = sorted(
                (r for r in rows if r["order"] == order and l2l_key in r),
                key=lambda r: r["inner_steps"],
            )
            if line:
                ax.plot(
                    [r["inner_steps"] for r in line],
                    [r[l2l_key] for r in line],
                    marker="x",
                    linestyle=":",
                    color=colors[order],
                    label=f"{REFERENCE_NAMES[line[0].get('reference', 'learn2learn')]} {order}"
                    + ("" if order == "implicit" else " order"),
                )
        ax.set_xticks(sorted({r["inner_steps"] for r in rows}))
        ax.set_xlabel("inner steps")
        ax.set_ylabel(ylabel)
        ax.set_title(
            "Conv-4 MAML, {}-way {}-shot, {} queries, meta-batch {}".format(*shape), fontsize=10
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = storage.join(out_dir, name)
        storage.buffer_savefig(fig, path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def quality_markdown(rows: list[dict]) -> str:
    """Gradient-quality rows as a Markdown table (one line per stage, inner steps, mode)."""
    lines = [
        (
            "| stage | inner steps | mode | cosine to exact | relative L2 error | "
            "implicit vs unrolled proximal |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        mode = r["mode"] + (f" (k={r['truncate']})" if "truncate" in r else "")
        mode += f" (lam={r['lam']}, cg={r['cg_steps']})" if "lam" in r else ""
        unrolled = r.get("implicit_vs_unrolled_rel_error")
        lines.append(
            f"| {r['stage']} | {r['inner_steps']} | {mode} | {r['cosine']:.4f} | "
            f"{r['rel_l2_error']:.3g} | {'-' if unrolled is None else f'{unrolled:.3g}'} |"
        )
    return "\n".join(lines) + "\n"


def plot_quality(rows: list[dict], out_dir: str) -> str:
    """Relative L2 error to the exact meta-gradient vs inner steps, per mode and stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for mode in dict.fromkeys(r["mode"] for r in rows):
        for stage, style in (("init", "-"), ("trained", "--")):
            line = [r for r in rows if r["mode"] == mode and r["stage"] == stage]
            if line:
                ax.plot([r["inner_steps"] for r in line],
                        [max(r["rel_l2_error"], 1e-12) for r in line], marker="o",
                        linestyle=style, label=f"{mode}, {stage}")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("inner steps")
    ax.set_ylabel("relative L2 error to the exact meta-gradient")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = storage.join(out_dir, "gradient_error_vs_inner_steps.png")
    storage.buffer_savefig(fig, path, dpi=120)
    plt.close(fig)
    return path


def plot_budget(rows: list[dict], out_dir: str) -> str:
    """Meta-test accuracy vs wall-clock training seconds, one line per mode (``--budgets``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        runs = r.get("budget_runs", [])
        if runs:
            ax.errorbar([b["train_s"] for b in runs], [100 * b["test_accuracy"] for b in runs],
                        yerr=[100 * b["test_accuracy_ci95"] for b in runs], marker="o",
                        capsize=3, label=f"{r['order']}, {r['inner_steps']} inner steps")  # fmt: skip
    ax.set_xlabel("wall-clock training seconds (incl. compile)")
    ax.set_ylabel("meta-test accuracy, % (95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = storage.join(out_dir, "accuracy_vs_wall_clock.png")
    storage.buffer_savefig(fig, path, dpi=120)
    plt.close(fig)
    return path


def _budget_runs(run, spec: dict, row: dict, args) -> list[dict]:
    """Trains the row's mode for each ``--budgets`` seconds (steps = budget / s_per_step)."""
    runs = []
    for budget in args.budgets:
        steps = max(1, int(budget / row["s_per_step"]))
        acc_spec = dict(spec, train_steps=steps, test_episodes=args.test_episodes,
                        workdir=storage.join(args.out, "budget", f"{_slug(spec)}_{budget:g}s"))  # fmt: skip
        runs.append(dict(run("accuracy", acc_spec), budget_s=budget))
    return runs


# --------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--out", default="maml_orders_out", help="output directory")
    parser.add_argument(
        "--orders",
        nargs="+",
        default=list(ORDERS),
        choices=MODES,
        help="second (exact), first, truncated (--truncate), implicit (--lam, --cg_steps)",
    )
    parser.add_argument("--truncate", type=int, default=1, help="truncated: exact last steps")
    parser.add_argument("--lam", type=float, default=1.0, help="implicit: proximal strength")
    parser.add_argument("--cg_steps", type=int, default=20, help="implicit: CG iterations")
    parser.add_argument(
        "--gradient_quality",
        action="store_true",
        help="cosine / relative error of every --orders mode's meta-gradient to the exact one",
    )
    parser.add_argument("--quality_inner_steps", nargs="+", type=int, default=list(QUALITY_STEPS))
    parser.add_argument(
        "--quality_train_steps", type=int, default=200, help="exact meta-steps before 'trained'"
    )
    parser.add_argument("--quality_data", choices=["synthetic", "omniglot"], default="omniglot")
    parser.add_argument(
        "--budgets",
        nargs="+",
        type=float,
        default=[],
        help="wall-clock seconds: train each mode for budget / s_per_step steps on Omniglot",
    )
    parser.add_argument("--inner_steps", nargs="+", type=int, default=[1, 2, 5, 10])
    parser.add_argument("--ways", nargs="+", type=int, default=[5])
    parser.add_argument("--shots", nargs="+", type=int, default=[1])
    parser.add_argument(
        "--queries", nargs="+", type=int, default=[15], help="query examples per class"
    )
    parser.add_argument("--meta_batch", nargs="+", type=int, default=[32])
    parser.add_argument("--remat", choices=["no", "yes", "both"], default="no")
    parser.add_argument(
        "--remat_at",
        nargs="+",
        type=int,
        default=None,
        help="with --remat both/yes: measure remat only at these inner steps",
    )
    parser.add_argument("--conv_impl", default="auto", choices=CONV_IMPLS)
    parser.add_argument(
        "--task_batching",
        default="auto",
        help="auto, vmap, scan or a chunk size (mmjax.meta.task_batching.resolve_task_batching)",
    )
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--image_size", type=int, default=28)
    parser.add_argument(
        "--dataset",
        choices=sorted(DATASET_SHAPES),
        default="omniglot",
        help="input shapes and protocol: omniglot (28x28x1, Conv-4 stride) or miniimagenet "
        "(84x84x3, max-pool, Finn et al.'s sizes unless given: 32 filters, 5 inner steps of "
        "lr 0.01, meta-batch 4, 15 queries); random pixels either way",
    )
    parser.add_argument("--backbone", choices=["conv4", "resnet12"], default="conv4")
    parser.add_argument(
        "--resnet_widths", nargs="+", type=int, default=[64, 160, 320, 640], help="ResNet-12 widths"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed steps after warm-up")
    parser.add_argument(
        "--l2l_repeats", type=int, default=None, help="timed learn2learn steps (default: --repeats)"
    )
    parser.add_argument(
        "--l2l_threads",
        nargs="+",
        type=int,
        default=[0],
        help="torch thread counts to time learn2learn with (0: torch default); "
        "the fastest is compared",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="alternating mmjax/learn2learn processes per configuration",
    )
    parser.add_argument(
        "--unroll", type=int, default=1, help="lax.scan unroll of the timed inner loop (0: full)"
    )
    parser.add_argument(
        "--l2l",
        choices=["auto", "yes", "no"],
        default="auto",
        help="learn2learn side-by-side (auto: when importable)",
    )
    parser.add_argument(
        "--l2l_python",
        default=os.environ.get("MMJAX_L2L_PYTHON"),
        help="interpreter with torch + learn2learn (default $MMJAX_L2L_PYTHON)",
    )
    parser.add_argument(
        "--torchopt_python",
        default=os.environ.get("MMJAX_TORCHOPT_PYTHON"),
        help="interpreter with torch + learn2learn + torchopt for implicit rows' TorchOpt "
        "reference (default $MMJAX_TORCHOPT_PYTHON, else --l2l_python when torchopt imports "
        "there)",
    )
    parser.add_argument(
        "--accuracy",
        action="store_true",
        help="also meta-train each configuration on Omniglot and test it",
    )
    parser.add_argument("--train_steps", type=int, default=300, help="--accuracy budget")
    parser.add_argument("--test_episodes", type=int, default=300, help="--accuracy test set")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, in-process (for the test suite)"
    )
    return parser


def _check_args(args) -> None:
    for name in ("inner_steps", "ways", "shots", "queries", "meta_batch"):
        values = getattr(args, name)
        low = 0 if name == "inner_steps" else 1
        if any(v < low for v in values):
            raise ValueError(f"--{name} values must be >= {low}; got {values}")
    if any(v < 1 for v in args.quality_inner_steps) or args.quality_train_steps < 0:
        raise ValueError("--quality_inner_steps must be >= 1 and --quality_train_steps >= 0")
    if args.truncate < 0 or args.lam <= 0 or args.cg_steps < 1 or any(b <= 0 for b in args.budgets):
        raise ValueError("--truncate must be >= 0, --lam > 0, --cg_steps >= 1, --budgets > 0")
    for name in ("repeats", "rounds", "features", "image_size", "train_steps", "test_episodes"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1; got {getattr(args, name)}")
    if args.unroll < 0:
        raise ValueError(f"--unroll must be >= 0 (0: full); got {args.unroll}")
    from mmjax.meta.task_batching import TASK_BATCHINGS, resolve_task_batching

    value = int(args.task_batching) if args.task_batching.isdigit() else args.task_batching
    try:
        resolve_task_batching(value)  # the library's rule, one place
    except ValueError:
        raise ValueError(
            f"--task_batching must be {', '.join(TASK_BATCHINGS)} or an int >= 1; "
            f"got {args.task_batching!r}"
        ) from None
    args.task_batching = value


def main(argv: list[str] | None = None) -> list[dict]:
    """Runs the benchmark; returns one dict per measured configuration (also written to --out)."""
    args = _parser().parse_args(argv)
    if args.child:
        task, spec = args.child[0], json.loads(args.child[1])
        if task == "peak":
            print(json.dumps({"matmul_peak_gflop_s": matmul_peak_gflops(spec["size"])}))
        elif task == "measure":
            print(json.dumps(measure(spec)))
        elif task == "quality":
            print(json.dumps({"rows": gradient_quality(spec)}))
        else:
            print(json.dumps(train_accuracy(spec)))
        return []
    _check_args(args)
    given = argv if argv is not None else sys.argv[1:]
    shapes = DATASET_SHAPES[args.dataset]
    for name in ("image_size", "features", "inner_steps", "meta_batch"):
        if name in shapes and f"--{name}" not in given:
            setattr(args, name, shapes[name])
    if args.smoke:  # a one-block Conv-4 on 14x14, every configuration in this process
        args.features, args.image_size, args.repeats, args.rounds = 8, 14, 2, 1
        args.queries, args.meta_batch = [2], [2]
        if "--inner_steps" not in given:
            args.inner_steps = [1]
        if "--l2l" not in given:
            args.l2l = "no"  # learn2learn's OmniglotCNN is fixed to 28x28
        if "--resnet_widths" not in given:
            args.resnet_widths = [4, 4]
        args.train_steps, args.test_episodes = min(args.train_steps, 3), min(args.test_episodes, 10)
        if "--quality_inner_steps" not in given:
            args.quality_inner_steps = [1, 2]
        args.quality_train_steps = min(args.quality_train_steps, 2)
        if "--quality_data" not in given:
            args.quality_data = "synthetic"
    l2l_python = _l2l_python(args)
    torchopt_python = _torchopt_python(args, l2l_python)  # refused early, before any timing
    storage.makedirs(args.out)
    run = (lambda task, spec: _CHILD_TASKS[task](spec)) if args.smoke else _in_child
    peak = run("peak", {"size": 512 if args.smoke else 2048})["matmul_peak_gflop_s"]
    print(f"matmul peak: {peak:.1f} GFLOP/s (f32, same backend)", flush=True)
    remats = {"no": [False], "yes": [True], "both": [False, True]}[args.remat]
    jsonl = storage.join(args.out, "maml_orders.jsonl")
    storage.write_text(jsonl, "")
    rows = []
    for ways, shots, queries, batch, order, steps, remat in itertools.product(
        args.ways, args.shots, args.queries, args.meta_batch, args.orders, args.inner_steps, remats
    ):
        if remat and args.remat_at is not None and steps not in args.remat_at:
            continue
        spec = dict(
            order=order,
            inner_steps=steps,
            remat=remat,
            ways=ways,
            shots=shots,
            queries=queries,
            meta_batch=batch,
            features=args.features,
            image_size=args.image_size,
            conv_impl=args.conv_impl,
            repeats=args.repeats,
            task_batching=args.task_batching,
            unroll=args.unroll if args.unroll else True,
            matmul_peak_gflop_s=round(peak, 2),
            num_blocks=1 if args.smoke else 4,
            **({"truncate": args.truncate} if order == "truncated" else {}),
            **({"lam": args.lam, "cg_steps": args.cg_steps} if order == "implicit" else {}),
        )
        if args.dataset != "omniglot" or args.backbone != "conv4":
            spec.update(
                dataset=args.dataset,
                backbone=args.backbone,
                channels=shapes["channels"],
                pool=shapes["pool"],
                inner_lr=shapes.get("inner_lr", 0.4),
            )
            if args.backbone == "resnet12":
                spec["widths"] = list(args.resnet_widths)
        measured, references = [], []
        reference_python = torchopt_python if order == "implicit" else l2l_python
        for _ in range(args.rounds):
            measured.append(run("measure", spec))
            if reference_python and not remat:
                for threads in args.l2l_threads:
                    references.append(
                        _run_l2l(
                            reference_python,
                            dict(spec, repeats=args.l2l_repeats or args.repeats, threads=threads),
                        )
                    )
        row = measured[0]
        if args.rounds > 1:
            row = dict(row)
            row["s_per_step"] = _seconds(statistics.median(m["s_per_step"] for m in measured))
            row["tasks_per_s"] = round(batch / row["s_per_step"], 2)
            row["s_per_step_rounds"] = [m["s_per_step"] for m in measured]
            row["achieved_gflop_s"] = round(row["gflop_per_step"] / row["s_per_step"], 2)
            row["peak_fraction"] = round(row["achieved_gflop_s"] / peak, 4)
        row["rounds"] = args.rounds
        if references:
            by_threads = {}
            for r in references:
                by_threads.setdefault(r["threads"], []).append(r["step_s"])
            best = min(by_threads, key=lambda t: statistics.median(by_threads[t]))
            references = [r for r in references if r["threads"] == best]
            l2l_s = statistics.median(r["step_s"] for r in references)
            row.update(
                l2l_s_per_step_by_threads={
                    str(t): round(statistics.median(v), 5) for t, v in by_threads.items()
                },
                l2l_tasks_per_s=round(batch / l2l_s, 2),
                l2l_s_per_step=round(l2l_s, 5),
                l2l_s_per_step_rounds=[r["step_s"] for r in references],
                l2l_peak_memory_mb=max(r["peak_rss_mb"] for r in references),
                l2l_threads=references[0]["threads"],
                l2l_versions=f"learn2learn {references[0].get('learn2learn')}, "
                f"torch {references[0]['torch']}"
                + (
                    f", torchopt {references[0]['torchopt']}"
                    if references[0].get("framework") == "torchopt"
                    else ""
                ),
                reference=references[0].get("framework", "learn2learn"),
                speedup_vs_l2l=round(l2l_s / row["s_per_step"], 3),
            )
        if args.accuracy:
            acc_spec = dict(
                spec,
                train_steps=args.train_steps,
                test_episodes=args.test_episodes,
                workdir=storage.join(args.out, "accuracy", _slug(spec)),
            )
            row.update(run("accuracy", acc_spec))
        if args.budgets:
            row["budget_runs"] = _budget_runs(run, spec, row, args)
        rows.append(row)
        print(json.dumps(row), flush=True)
        storage.append_text(jsonl, json.dumps(row) + "\n")
    first = rows[0]
    header = (
        f"Machine: {platform.machine()} ({throughput.cpu_name()}), {os.cpu_count()} CPUs; backend "
        f"{first['backend']} ({first['device']}); jax {first['jax']}; conv "
        f"{first['conv_impl_resolved']}; tasks by {first['task_batching_resolved']}; "
        f"measured f32 matmul peak {peak:.1f} GFLOP/s; FLOPs from "
        f"XLA cost_analysis with the inner loop unrolled; median of {args.repeats} steps after "
        f"a warm-up, {args.rounds} round(s)"
        + ("" if args.smoke else ", each configuration in its own process")
        + (
            f"; learn2learn: {rows[0].get('l2l_versions', '-')}, fastest of torch threads "
            f"{args.l2l_threads} (0 = torch default)"
            if l2l_python
            else ""
        )
        + (
            "; implicit rows against TorchOpt's iMAML (custom_root + CG, same network and "
            f"proximal inner loop): {next(r['l2l_versions'] for r in rows if r.get('reference') == 'torchopt')}"
            if any(r.get("reference") == "torchopt" for r in rows)
            else ""
        )
        + ".\n"
    )
    table = markdown(rows, header)
    storage.write_text(storage.join(args.out, "maml_orders.md"), table)
    print(table)
    plot(rows, args.out)
    if args.budgets:
        plot_budget(rows, args.out)
    if args.gradient_quality:
        quality = run_gradient_quality(run, args, peak)
        for row in rows:
            row["gradient_quality"] = [q for q in quality if q["mode"] == row["order"]]
    return rows


def run_gradient_quality(run, args, peak: float) -> list[dict]:
    """``--gradient_quality``: rows to OUT/gradient_quality.{jsonl,md} and the error plot."""
    spec = dict(
        ways=args.ways[0], shots=args.shots[0], queries=args.queries[0],
        meta_batch=args.meta_batch[0], features=args.features, image_size=args.image_size,
        conv_impl=args.conv_impl, num_blocks=1 if args.smoke else 4,
        modes=[m for m in args.orders if m != "second"], truncate=args.truncate, lam=args.lam,
        cg_steps=args.cg_steps, quality_inner_steps=args.quality_inner_steps,
        quality_train_steps=args.quality_train_steps, quality_data=args.quality_data,
    )  # fmt: skip
    quality = run("quality", spec)["rows"]
    storage.write_text(
        storage.join(args.out, "gradient_quality.jsonl"),
        "".join(json.dumps(q) + "\n" for q in quality),
    )
    table = quality_markdown(quality)
    storage.write_text(storage.join(args.out, "gradient_quality.md"), table)
    print(table)
    plot_quality(quality, args.out)
    return quality


def _seconds(t: float) -> float:
    """Seconds to 5 significant digits: a fixed 5 decimals would cut a smoke-size step
    (~0.3 ms) to 2 digits, and its tasks/s would no longer match its s/step."""
    return float(f"{t:.5g}")


def _slug(spec: dict) -> str:
    """A directory name for the row's configuration."""
    return (
        f"{spec['order']}_k{spec['inner_steps']}_remat{int(spec['remat'])}_"
        f"{spec['ways']}w{spec['shots']}s{spec['queries']}q_mb{spec['meta_batch']}"
    )


_CHILD_TASKS = {
    "peak": lambda spec: {"matmul_peak_gflop_s": matmul_peak_gflops(spec["size"], repeats=3)},
    "measure": measure,
    "accuracy": train_accuracy,
    "quality": lambda spec: {"rows": gradient_quality(spec)},
}

if __name__ == "__main__":
    main()
