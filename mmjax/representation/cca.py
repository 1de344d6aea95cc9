"""Canonical correlation analysis: linear CCA in closed form and the deep CCA objective.

For paired samples ``x: [n, dx]``, ``y: [n, dy]`` with centred, regularised covariances
``Sxx = X'X / (n - 1) + reg I``, ``Syy = Y'Y / (n - 1) + reg I``, ``Sxy = X'Y / (n - 1)``, the
canonical correlations are the singular values of ``T = Wx Sxy Wy'`` for any whitening
``Wx Sxx Wx' = I`` (Hotelling 1936; Andrew et al. 2013 for deep CCA).

* :func:`linear_cca` (closed form, not for gradients) whitens with ``Sxx^{-1/2}`` from ``eigh``
  of the symmetric positive-definite ``Sxx`` and returns the canonical directions.
* :func:`cca_loss` (deep CCA, to be differentiated) whitens with Cholesky factors
  (``Wx = Lx^{-1}``) and takes the sum of the top ``k`` singular values of ``T`` with an
  explicit gradient ``U_k V_k'`` (:func:`top_singular_sum`): ``jax.grad`` through ``eigh`` or
  ``svd`` divides by differences of eigenvalues, which are 0 when ``n < d`` (``T`` then has
  rank ``< n``, so most singular values are 0), and gives NaN. ``reg > 0`` keeps both
  covariances positive definite whatever ``n``.

``dtype=jnp.float64`` computes the covariances and their factorisations in double precision;
it needs ``jax_enable_x64`` (``with jax.enable_x64(True): ...``), and says so otherwise.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np


class LinearCCA(NamedTuple):
    """Result of :func:`linear_cca` (``k`` components).

    Attributes:
      correlations: ``[k]`` canonical correlations, descending.
      x_weights: ``[dx, k]``; ``(x - x_mean) @ x_weights`` are the canonical variates of x.
      y_weights: ``[dy, k]``.
      x_mean: ``[dx]``.
      y_mean: ``[dy]``.
    """

    correlations: jax.Array
    x_weights: jax.Array
    y_weights: jax.Array
    x_mean: jax.Array
    y_mean: jax.Array


def _check_pair(x, y, reg, num_components, dtype):
    x_shape, y_shape = tuple(np.shape(x)), tuple(np.shape(y))
    if len(x_shape) != 2:
        raise ValueError(f"x has shape {x_shape}; expected [samples, dx]")
    if len(y_shape) != 2:
        raise ValueError(f"y has shape {y_shape}; expected [samples, dy]")
    if x_shape[0] != y_shape[0]:
        raise ValueError(
            f"x has {x_shape[0]} samples and y has {y_shape[0]} (shapes {x_shape}, {y_shape}); "
            "CCA needs paired rows"
        )
    if x_shape[0] < 2:
        raise ValueError(f"x and y have {x_shape[0]} samples; CCA needs at least 2")
    if isinstance(reg, bool) or not isinstance(reg, (int, float)) or not reg > 0:
        raise ValueError(
            f"reg={reg!r} must be a number > 0 (it keeps the covariances positive definite)"
        )
    limit = min(x_shape[1], y_shape[1])
    if num_components is None:
        num_components = limit
    if (
        isinstance(num_components, bool)
        or not isinstance(num_components, int)
        or not 1 <= num_components <= limit
    ):
        raise ValueError(f"num_components={num_components!r} must be an int in [1, {limit}]")
    if dtype is None:
        dtype = jnp.result_type(x, y)
    dtype = jnp.dtype(dtype)
    if dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)):
        raise ValueError(f"dtype={dtype} must be float32 or float64")
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            "dtype=float64 needs double precision enabled: set jax_enable_x64 or call inside "
            "`with jax.enable_x64(True):`"
        )
    return num_components, dtype


def covariances(
    x: chex.Array, y: chex.Array, reg: float
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(Sxx + reg I, Syy + reg I, Sxy, x_mean, y_mean)`` of paired rows (``n - 1`` normalised)."""
    n = x.shape[0]
    x_mean, y_mean = jnp.mean(x, axis=0), jnp.mean(y, axis=0)
    xc, yc = x - x_mean, y - y_mean
    sxx = xc.T @ xc / (n - 1) + reg * jnp.eye(x.shape[1], dtype=x.dtype)
    syy = yc.T @ yc / (n - 1) + reg * jnp.eye(y.shape[1], dtype=y.dtype)
    return sxx, syy, xc.T @ yc / (n - 1), x_mean, y_mean


def inverse_sqrt(matrix: chex.Array) -> jax.Array:
    """``S^{-1/2}`` of a symmetric positive-definite ``S`` by ``eigh`` (eigenvalues floored
    at the smallest positive normal number)."""
    matrix = 0.5 * (matrix + matrix.T)
    values, vectors = jnp.linalg.eigh(matrix)
    values = jnp.maximum(values, jnp.finfo(matrix.dtype).tiny)
    return (vectors * jax.lax.rsqrt(values)) @ vectors.T


def linear_cca(
    x: chex.Array,
    y: chex.Array,
    *,
    reg: float = 1e-4,
    num_components: Optional[int] = None,
    dtype=None,
) -> LinearCCA:
    """Regularised linear CCA in closed form.

    Args:
      x: ``[n, dx]``.
      y: ``[n, dy]`` paired with ``x``.
      reg: ridge ``> 0`` added to both covariances (stable for ``n < d``).
      num_components: ``k <= min(dx, dy)`` (default: all).
      dtype: ``float32`` or ``float64`` for the computation (default: that of the inputs).

    Returns:
      :class:`LinearCCA`; with these weights the variates have unit (regularised) variance
      and ``corr(x_variate_i, y_variate_i) = correlations[i]``.
    """
    k, dtype = _check_pair(x, y, reg, num_components, dtype)
    x, y = jnp.asarray(x, dtype), jnp.asarray(y, dtype)
    sxx, syy, sxy, x_mean, y_mean = covariances(x, y, reg)
    wx, wy = inverse_sqrt(sxx), inverse_sqrt(syy)
    u, s, vt = jnp.linalg.svd(wx @ sxy @ wy, full_matrices=False)
    return LinearCCA(s[:k], wx @ u[:, :k], wy @ vt.T[:, :k], x_mean, y_mean)


def top_singular_sum(matrix: chex.Array, k: int) -> jax.Array:
    """Sum of the ``k`` largest singular values of ``matrix: [p, q]``.

    Its JVP is ``sum_{i<k} u_i' dT v_i`` (gradient ``U_k V_k'``, a subgradient at ties): no
    division by singular-value gaps, so finite when singular values repeat or vanish.
    """

    @jax.custom_jvp
    def top_sum(m):
        return jnp.sum(jnp.linalg.svd(m, compute_uv=False)[:k])

    @top_sum.defjvp
    def top_sum_jvp(primals, tangents):
        (m,), (dm,) = primals, tangents
        u, s, vt = jnp.linalg.svd(m, full_matrices=False)
        return jnp.sum(s[:k]), jnp.sum(u[:, :k] * (dm @ vt[:k].T))

    return top_sum(matrix)


def canonical_correlations(
    x: chex.Array,
    y: chex.Array,
    *,
    reg: float = 1e-3,
    dtype=None,
) -> jax.Array:
    """``[min(dx, dy)]`` canonical correlations (descending) of ``x: [n, dx]``, ``y: [n, dy]``,
    by Cholesky whitening."""
    _, dtype = _check_pair(x, y, reg, None, dtype)
    return jnp.linalg.svd(_whitened_cross(x, y, reg, dtype), compute_uv=False)


def _whitened_cross(x, y, reg, dtype):
    x, y = jnp.asarray(x, dtype), jnp.asarray(y, dtype)
    sxx, syy, sxy, _, _ = covariances(x, y, reg)
    lx = jnp.linalg.cholesky(0.5 * (sxx + sxx.T))
    ly = jnp.linalg.cholesky(0.5 * (syy + syy.T))
    left = jax.scipy.linalg.solve_triangular(lx, sxy, lower=True)  # Lx^{-1} Sxy
    return jax.scipy.linalg.solve_triangular(ly, left.T, lower=True).T  # ... Ly^{-T}


def cca_loss(
    x: chex.Array,
    y: chex.Array,
    *,
    reg: float = 1e-3,
    num_components: Optional[int] = None,
    dtype=None,
) -> tuple[jax.Array, dict]:
    """Deep CCA loss: minus the sum of the top ``k`` canonical correlations of ``x`` and ``y``.

    Args:
      x: ``[n, dx]`` network outputs for modality 1.
      y: ``[n, dy]`` for modality 2, paired rows; ``n < d`` is fine.
      reg: ridge ``> 0`` on both covariances.
      num_components: ``k`` (default ``min(dx, dy)``, the total correlation of Andrew et al.).
      dtype: ``float32`` or ``float64`` for the covariance algebra (result cast back).

    Returns:
      ``(loss, {"loss", "correlation"})`` with ``correlation = -loss`` (between 0 and ``k``).
    """
    k, dtype = _check_pair(x, y, reg, num_components, dtype)
    out_dtype = jnp.result_type(x, y)
    total = top_singular_sum(_whitened_cross(x, y, reg, dtype), k).astype(out_dtype)
    return -total, {"loss": -total, "correlation": total}


class CCAProjection(NamedTuple):
    """A linear CCA fitted on paired image / stroke embeddings (:func:`fit_cca_projection`).

    Attributes:
      image_weights: ``[D_image, k]``; ``(image - image_mean) @ image_weights`` are the image
        view's top ``k`` canonical variates.
      stroke_weights: ``[D_stroke, k]``.
      image_mean: ``[D_image]``.
      stroke_mean: ``[D_stroke]``.
      correlations: ``[k]`` canonical correlations on the fitting data, descending.
    """

    image_weights: jax.Array
    stroke_weights: jax.Array
    image_mean: jax.Array
    stroke_mean: jax.Array
    correlations: jax.Array


def fit_cca_projection(
    image_emb: chex.Array,
    stroke_emb: chex.Array,
    *,
    dim: Optional[int] = None,
    reg: float = 1e-3,
) -> CCAProjection:
    """Fits the linear CCA of deep CCA's evaluation protocol (Andrew et al. 2013, Sec. 3).

    Deep CCA trains the two networks to have maximally correlated outputs; the shared space is
    the span of the canonical directions of those outputs, fitted once on training data
    (here: embeddings of meta-train drawings) and then applied unchanged to new data.

    Args:
      image_emb: ``[n, D_image]`` image-view network outputs of ``n`` drawings.
      stroke_emb: ``[n, D_stroke]`` stroke-view outputs of the same drawings (paired rows).
      dim: ``k``, the number of canonical directions kept (top correlations first; default
        ``min(D_image, D_stroke)``).
      reg: ridge ``> 0`` on both covariances.

    Returns:
      :class:`CCAProjection` with ``[D, k]`` weights and ``[D]`` means per view (float32).
    """
    fitted = linear_cca(image_emb, stroke_emb, reg=reg, num_components=dim)
    return CCAProjection(
        image_weights=fitted.x_weights,
        stroke_weights=fitted.y_weights,
        image_mean=fitted.x_mean,
        stroke_mean=fitted.y_mean,
        correlations=fitted.correlations,
    )


def apply_cca_projection(
    projection: CCAProjection, image_emb: chex.Array, stroke_emb: chex.Array
) -> tuple[jax.Array, jax.Array]:
    """Projects both views onto the fitted canonical directions.

    Args:
      projection: from :func:`fit_cca_projection`.
      image_emb: ``[..., D_image]``.
      stroke_emb: ``[..., D_stroke]``.

    Returns:
      ``(image [..., k], strokes [..., k])``: centred with the fitting means, then
      multiplied by the weights (unit variance, correlation ``correlations[i]`` in component
      ``i`` on the fitting data).
    """
    image = (jnp.asarray(image_emb) - projection.image_mean) @ projection.image_weights
    strokes = (jnp.asarray(stroke_emb) - projection.stroke_mean) @ projection.stroke_weights
    return image, strokes
