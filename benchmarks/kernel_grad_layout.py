"""Times the two layouts of a convolution's kernel gradient ``P^T g`` on this backend.

``mmjax.nn.conv.patch_matmul`` takes ``P^T g`` (``P: [pixels, depth]`` im2col patches,
``g: [pixels, channels]``) as ``(g^T P)^T`` behind an ``optimization_barrier`` when
``depth >= 64``; this script measures both forms at Conv-4's shapes (second layer on 75
query images down to the fourth on 5 support images) so that the rule can be checked on
any machine. Prints a Markdown table (minimum and median of ``--repeats`` runs, forms
alternating) and returns its rows.

    python benchmarks/kernel_grad_layout.py
"""

from __future__ import annotations

import argparse
import statistics
import time

# (pixels, depth): Conv-4 layers 2-4 on 75 queries, 2-4 on 5 support images, layer 1 (depth 9).
SHAPES = ((3675, 576), (1200, 576), (300, 576), (245, 576), (80, 576), (20, 576), (14700, 9))


def plain_form(patches, grad):
    """``patches^T @ grad`` as written: ``[N, K], [N, C] -> [K, C]``."""
    import jax.numpy as jnp

    return jnp.einsum("nk,nc->kc", patches, grad)


def barrier_form(patches, grad):
    """``(grad^T @ patches)^T`` behind an ``optimization_barrier``: ``[N, K], [N, C] -> [K, C]``."""
    import jax
    import jax.numpy as jnp

    return jax.lax.optimization_barrier(jnp.einsum("nc,nk->ck", grad, patches)).T


def measure(pixels: int, depth: int, channels: int, repeats: int) -> dict:
    """Seconds of ``P^T g`` in the plain and the barrier form; ``P: [pixels, depth]``."""
    import jax

    patches = jax.random.normal(jax.random.key(0), (pixels, depth))
    grad = jax.random.normal(jax.random.key(1), (pixels, channels))
    forms = {"plain": jax.jit(plain_form), "barrier": jax.jit(barrier_form)}
    times = {name: [] for name in forms}
    for fn in forms.values():
        jax.block_until_ready(fn(patches, grad))  # compile
    for _ in range(repeats):
        for name, fn in forms.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(patches, grad))
            times[name].append(time.perf_counter() - start)
    row = {"pixels": pixels, "depth": depth, "channels": channels, "backend": jax.default_backend()}
    for name, ts in times.items():
        row[f"{name}_min_ms"] = round(1e3 * min(ts), 4)
        row[f"{name}_median_ms"] = round(1e3 * statistics.median(ts), 4)
    row["barrier_speedup"] = round(row["plain_min_ms"] / row["barrier_min_ms"], 3)
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    """Runs the comparison; ``--smoke`` uses two tiny shapes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--smoke", action="store_true", help="two tiny shapes, 3 repeats")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.channels < 1:
        raise ValueError(
            f"--repeats and --channels must be >= 1; got {args.repeats}, {args.channels}"
        )
    shapes = ((40, 72), (40, 9)) if args.smoke else SHAPES
    repeats = 3 if args.smoke else args.repeats
    rows = [measure(p, d, args.channels, repeats) for p, d in shapes]
    print("| pixels | depth | plain min / median ms | barrier min / median ms | speed-up (min) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['pixels']} | {r['depth']} | {r['plain_min_ms']:.3f} / {r['plain_median_ms']:.3f}"
            f" | {r['barrier_min_ms']:.3f} / {r['barrier_median_ms']:.3f}"
            f" | {r['barrier_speedup']:.2f}x |"
        )
    return rows


if __name__ == "__main__":
    main()
