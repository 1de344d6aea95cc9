"""What bfloat16 compute does to MAML's second-order meta-gradient, as inner steps grow.

For Conv-4 on one task batch, the exact (second-order) meta-gradient
(`mmjax.meta.maml.meta_grad`) is computed three ways from the same float32 parameters:

* ``float64``: the reference (x64 enabled, parameters and images cast to float64);
* ``float32``: the default model;
* ``bfloat16``: ``Classifier(dtype="bfloat16")`` (``config.model.dtype='bfloat16'``):
  activations and matmuls in bfloat16, batch-norm statistics, loss, parameters and the
  inner-loop updates in float32.

Each row gives the relative L2 error ``|g - g_ref| / |g_ref|`` of the float32 and bfloat16
gradients against float64 and of bfloat16 against float32, the cosine of bfloat16 to float64,
the bfloat16 error in units of bfloat16's unit roundoff ``2**-8`` (8 significand bits), and
``inputs_rounded_vs_f64``: the float64 gradient at the images and parameters rounded to
bfloat16 (everything else exact) against float64, the part of the error that rounding the
inputs alone makes.

Writes ``OUT/bf16_error.jsonl`` and ``OUT/bf16_error.md``.

  python benchmarks/bf16_error.py --out /tmp/bf16 --inner_steps 1 2 5 10
  python benchmarks/bf16_error.py --smoke --out /tmp/bf16_smoke        # tiny, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

UNIT_ROUNDOFF = {"float32": 2.0**-24, "bfloat16": 2.0**-8}


def _episodes(spec: dict):
    """One task batch: real Omniglot (``data='omniglot'``) or uniform random pixels."""
    import jax
    import jax.numpy as jnp

    from mmjax.meta import maml

    ways, shots, queries, batch = spec["ways"], spec["shots"], spec["queries"], spec["meta_batch"]
    size = spec["image_size"]
    if spec["data"] == "omniglot":
        from mmjax.data import omniglot_splits, sample_episodes, to_device

        train = to_device(omniglot_splits(image_size=size)["train"])
        return sample_episodes(
            jax.random.PRNGKey(spec["seed"]),
            train,
            batch_size=batch,
            ways=ways,
            shots=shots,
            queries=queries,
        )
    keys = jax.random.split(jax.random.PRNGKey(spec["seed"]), 2)
    return maml.Episode(
        jax.random.uniform(keys[0], (batch, ways * shots, size, size, 1)),
        jnp.tile(jnp.repeat(jnp.arange(ways), shots), (batch, 1)),
        jax.random.uniform(keys[1], (batch, ways * queries, size, size, 1)),
        jnp.tile(jnp.repeat(jnp.arange(ways), queries), (batch, 1)),
    )


def meta_gradients(spec: dict, steps: int) -> dict:
    """The second-order meta-gradient of one task batch in float64, float32 and bfloat16.

    Returns:
      ``{"float64", "float32", "bfloat16"}`` -> the gradient pytree as float64 numpy arrays,
      plus ``"dtypes"``: the leaf dtypes of the float32 and bfloat16 gradients (as computed).
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mmjax.meta import maml
    from mmjax.nn import Classifier, Conv4

    def model(dtype):
        encoder = Conv4(features=spec["features"], num_blocks=spec["num_blocks"])
        return Classifier(encoder, num_classes=spec["ways"], dtype=dtype)

    episodes = _episodes(spec)
    params = model("float32").init(jax.random.PRNGKey(spec["seed"] + 1), episodes.support_inputs[0])

    def grad(dtype, params, episodes):
        loss_fn = maml.classification_loss(model(dtype).apply)
        fn = lambda p, e: maml.meta_grad(
            p, e, loss_fn=loss_fn, inner_lr=spec["inner_lr"], num_steps=steps, task_batching="vmap"
        )[0]
        return jax.jit(fn)(params, episodes)

    to64 = lambda tree: jax.tree.map(
        lambda x: np.asarray(x, np.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )
    g32 = grad("float32", params, episodes)
    g16 = grad("bfloat16", params, episodes)
    round16 = lambda tree: jax.tree.map(
        lambda x: (
            x.astype(jnp.bfloat16).astype(x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
        ),
        tree,
    )
    with jax.enable_x64(True):
        g64 = to64(grad("float32", to64(params), to64(episodes)))
        g64_rounded = to64(grad("float32", *round16((to64(params), to64(episodes)))))
    return {
        "float64": g64,
        "float64_at_rounded_inputs": g64_rounded,
        "float32": to64(g32),
        "bfloat16": to64(g16),
        "dtypes": {
            "float32": sorted({str(x.dtype) for x in jax.tree.leaves(g32)}),
            "bfloat16": sorted({str(x.dtype) for x in jax.tree.leaves(g16)}),
        },
    }


def _flat(tree):
    import jax
    import numpy as np

    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def relative_error(got, want) -> float:
    """``|got - want|_2 / |want|_2`` over all leaves (float64)."""
    import numpy as np

    got, want = _flat(got), _flat(want)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def measure(spec: dict) -> list[dict]:
    """One row per count in ``spec["inner_steps"]`` (see the module docstring)."""
    import numpy as np

    rows = []
    for steps in spec["inner_steps"]:
        g = meta_gradients(spec, steps)
        a, b = _flat(g["bfloat16"]), _flat(g["float64"])
        rel16 = relative_error(g["bfloat16"], g["float64"])
        rows.append(
            {
                "inner_steps": steps,
                "rel_error_f32_vs_f64": float(f"{relative_error(g['float32'], g['float64']):.4g}"),
                "rel_error_bf16_vs_f64": float(f"{rel16:.4g}"),
                "rel_error_bf16_vs_f32": float(
                    f"{relative_error(g['bfloat16'], g['float32']):.4g}"
                ),
                "inputs_rounded_vs_f64": float(
                    f"{relative_error(g['float64_at_rounded_inputs'], g['float64']):.4g}"
                ),
                "cosine_bf16_vs_f64": round(
                    float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))), 6
                ),
                "bf16_error_in_units_of_2^-8": round(rel16 / UNIT_ROUNDOFF["bfloat16"], 3),
                "grad_dtypes_bf16": g["dtypes"]["bfloat16"],
            }
        )
    return rows


def markdown(rows: list[dict], spec: dict) -> str:
    lines = [
        (
            f"Conv-4 ({spec['features']} filters, {spec['num_blocks']} blocks), {spec['ways']}-way "
            f"{spec['shots']}-shot, {spec['queries']} queries, meta-batch {spec['meta_batch']}, "
            f"{spec['image_size']}x{spec['image_size']} {spec['data']} images, inner lr "
            f"{spec['inner_lr']}; exact second-order meta-gradient."
        ),
        "",
        (
            "| inner steps | f32 vs f64 | bf16 vs f64 | bf16 vs f32 | inputs rounded vs f64 "
            "| cosine bf16/f64 | bf16 err / 2^-8 |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['inner_steps']} | {r['rel_error_f32_vs_f64']:.3g} | "
            f"{r['rel_error_bf16_vs_f64']:.3g} | {r['rel_error_bf16_vs_f32']:.3g} | "
            f"{r['inputs_rounded_vs_f64']:.3g} | {r['cosine_bf16_vs_f64']:.6f} | {r['bf16_error_in_units_of_2^-8']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bf16_error_out", help="output directory")
    parser.add_argument("--inner_steps", nargs="+", type=int, default=[1, 2, 5, 10])
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--num_blocks", type=int, default=4)
    parser.add_argument("--image_size", type=int, default=28)
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--meta_batch", type=int, default=4)
    parser.add_argument("--inner_lr", type=float, default=0.4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", choices=["omniglot", "synthetic"], default="omniglot")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, synthetic data")
    return parser


def main(argv: list[str] | None = None) -> list[dict]:
    """Runs the measurement; returns its rows (also written to ``--out``)."""
    args = _parser().parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    if args.smoke:
        args.features, args.num_blocks, args.image_size = 4, 2, 10
        args.queries, args.meta_batch, args.data = 1, 2, "synthetic"
        if "--inner_steps" not in given:
            args.inner_steps = [1, 2]
    for name in ("inner_steps",):
        if any(s < 1 for s in getattr(args, name)):
            raise SystemExit(f"--{name} must be >= 1")
    spec = {k: v for k, v in vars(args).items() if k not in ("out", "smoke")}
    rows = measure(spec)
    os.makedirs(args.out, exist_ok=True)
    import jax

    machine = f"{platform.processor() or platform.machine()}, jax {jax.__version__}"
    with open(os.path.join(args.out, "bf16_error.jsonl"), "w") as f:
        f.writelines(json.dumps(dict(r, machine=machine)) + "\n" for r in rows)
    table = markdown(rows, spec)
    with open(os.path.join(args.out, "bf16_error.md"), "w") as f:
        f.write(table)
    print(table)
    return rows


if __name__ == "__main__":
    main()
