"""Tolerances for float comparisons that hold on any x86 CPU.

Two rules, used across the suite:

* **An exactness claim is checked in float64.** "vmap equals a loop", "scan equals vmap",
  "pmap equals one device", "im2col equals lax.conv", "remat changes nothing": the two sides
  are the same real function evaluated in different orders, so they agree to float64
  rounding (relative ~1e-15 per operation, amplified by a network's depth to well under
  1e-10). In float32 the same comparison depends on which summation order, blocking and FMA
  contraction the CPU's kernels pick, so a float32 tolerance that holds on one CPU can fail on
  another; such tolerances are not used.
* **A float32 bound is derived from the computation.** A sum of ``n`` products evaluated in
  float32 in *any* order (with or without FMA) lies within ``gamma(n) * sum(|a_i * b_i|)`` of
  the exact sum, ``gamma(n) = n u / (1 - n u)`` with the unit roundoff ``u = 2**-24``
  (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., eq. 3.5 and Lemma
  3.1). Two float32 evaluations of it therefore differ by at most ``2 gamma(n)`` times the sum
  of absolute terms, which the test computes in float64.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

UNIT_ROUNDOFF_FLOAT32 = 2.0**-24


def gamma(n: int, u: float = UNIT_ROUNDOFF_FLOAT32) -> float:
    """Higham's ``gamma_n = n u / (1 - n u)``: the relative error bound of an ``n``-term sum."""
    assert n * u < 1, n
    return n * u / (1 - n * u)


def assert_within_sum_bound(got, want, abs_terms, n: int) -> None:
    """Asserts ``|got - want| <= 2 gamma(n) abs_terms`` elementwise (two float32 sums of ``n`` terms).

    Args:
      got, want: float32 arrays of the same shape, two evaluations of the same sums.
      abs_terms: the sums of the absolute values of the terms, same shape (float64).
      n: the number of terms in each sum.
    """
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    bound = 2 * gamma(n) * np.asarray(abs_terms, np.float64)
    excess = np.abs(got - want) - bound
    worst = int(np.argmax(excess))
    assert np.all(excess <= 0), (
        f"float32 sums of {n} terms differ by {np.abs(got - want).flat[worst]:.3g} at flat index "
        f"{worst}, beyond the rounding bound {bound.flat[worst]:.3g}"
    )


@contextlib.contextmanager
def float64():
    """Enables x64 for the block: default float dtype float64, as exactness checks need."""
    with jax.enable_x64(True):
        yield


def to_float64(tree):
    """Casts every floating leaf of ``tree`` to float64 (call inside `float64`)."""
    return jax.tree.map(
        lambda x: (
            jnp.asarray(x, jnp.float64) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x
        ),
        tree,
    )
