"""MAML's meta-gradient estimators on one interface: exact, first order, truncated, implicit.

A :class:`MetaGradient` names how the outer gradient goes through the inner loop
(``docs/meta_gradients.md`` has the formulas):

- ``"exact"``: back-propagation through every inner step (second order);
- ``"first_order"``: the inner Jacobians replaced by the identity (FOMAML);
- ``"truncated"``: exact through the last ``truncate`` inner steps, first order before them
  (``truncate=num_steps`` is exact, ``truncate=0`` is first order);
- ``"implicit"``: iMAML (Rajeswaran et al. 2019). The inner problem is the proximal
  ``min_φ L_support(φ) + lam/2 |φ - θ|²``, solved by ``num_steps`` of gradient descent
  from ``θ``; the meta-gradient is ``(I + H/lam)^-1 ∇L_query(φ*)`` with ``H`` the support
  Hessian at ``φ*``, solved by conjugate gradient (``cg_steps``, ``cg_tol``) on
  Hessian-vector products (``jax.jvp`` of ``jax.grad``) in a ``jax.custom_vjp``.
  Nothing of the inner loop is kept for the backward pass: memory does not grow with
  ``num_steps``.

``first_order_until=n`` (MAML++'s derivative-order annealing) makes meta-steps ``< n``
first order and later ones use ``mode``; the meta-step is a traced argument and the two
are the branches of one ``lax.cond``, so a single compiled program serves the whole run.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from mmjax.meta import common

Params = Any
META_GRADIENTS = ("exact", "first_order", "truncated", "implicit")


class MetaGradient(NamedTuple):
    """Static settings of the meta-gradient (hashable; see the module docstring).

    Attributes:
      mode: one of ``META_GRADIENTS``.
      truncate: ``"truncated"`` only: exact inner steps at the end, in ``[0, num_steps]``.
      lam: ``"implicit"`` only: proximal strength ``> 0``.
      cg_steps: ``"implicit"`` only: conjugate-gradient iterations ``>= 1``.
      cg_tol: ``"implicit"`` only: CG's relative residual tolerance ``>= 0``.
      first_order_until: meta-steps before this one are first order (0: never).
    """

    mode: str = "exact"
    truncate: int | None = None
    lam: float = 1.0
    cg_steps: int = 20
    cg_tol: float = 1e-6
    first_order_until: int = 0

    @property
    def annealed(self) -> bool:
        """Whether the meta-step decides first vs ``mode`` order (``first_order_until > 0``)."""
        return self.first_order_until > 0


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def meta_gradient_spec(
    meta_gradient: str | MetaGradient = "exact",
    *,
    first_order: bool = False,
    truncate: int | None = None,
    lam: float = 1.0,
    cg_steps: int = 20,
    cg_tol: float = 1e-6,
    first_order_until: int = 0,
) -> MetaGradient:
    """Checked :class:`MetaGradient` from a mode name and its settings (or a spec as is).

    ``first_order=True`` (the older flag) means ``"first_order"`` and is an error with any
    other mode. Raises ``ValueError`` naming the argument and its range.
    """
    if isinstance(meta_gradient, MetaGradient):
        spec = meta_gradient
        if first_order and spec.mode != "first_order":
            raise ValueError(
                f"first_order=True conflicts with meta_gradient mode {spec.mode!r}; "
                "use meta_gradient='first_order'"
            )
    else:
        if meta_gradient not in META_GRADIENTS:
            raise ValueError(
                f"meta_gradient must be one of {META_GRADIENTS}; got {meta_gradient!r}"
            )
        if first_order and meta_gradient not in ("exact", "first_order"):
            raise ValueError(
                f"first_order=True conflicts with meta_gradient={meta_gradient!r}; "
                "use meta_gradient='first_order'"
            )
        mode = "first_order" if first_order else meta_gradient
        spec = MetaGradient(mode, truncate, lam, cg_steps, cg_tol, first_order_until)
    if spec.mode not in META_GRADIENTS:
        raise ValueError(f"meta_gradient mode must be one of {META_GRADIENTS}; got {spec.mode!r}")
    if spec.mode == "truncated" and (not _is_int(spec.truncate) or spec.truncate < 0):
        raise ValueError(
            f"meta_gradient='truncated' needs truncate, an int in [0, num_steps]; "
            f"got {spec.truncate!r}"
        )
    if spec.mode == "implicit":
        if not float(spec.lam) > 0:
            raise ValueError(f"lam must be > 0; got {spec.lam!r}")
        if not _is_int(spec.cg_steps) or spec.cg_steps < 1:
            raise ValueError(f"cg_steps must be an int >= 1; got {spec.cg_steps!r}")
        if not float(spec.cg_tol) >= 0:
            raise ValueError(f"cg_tol must be >= 0; got {spec.cg_tol!r}")
    if not _is_int(spec.first_order_until) or spec.first_order_until < 0:
        raise ValueError(f"first_order_until must be an int >= 0; got {spec.first_order_until!r}")
    if spec.annealed and spec.mode == "first_order":
        raise ValueError(
            "first_order_until > 0 anneals to a higher order; mode 'first_order' has none"
        )
    return spec


def check_num_steps(spec: MetaGradient, num_steps: int) -> None:
    """``truncate`` must lie in ``[0, num_steps]``; raises ``ValueError`` otherwise."""
    if spec.mode == "truncated" and not 0 <= spec.truncate <= num_steps:
        raise ValueError(f"truncate must be in [0, num_steps={num_steps}]; got {spec.truncate}")


def inner_segments(spec: MetaGradient, num_steps: int) -> list[tuple[int, bool]]:
    """``[(steps, first_order), ...]``: the inner loop of ``spec`` as first-order then exact runs.

    For ``"exact"``, ``"first_order"`` and ``"truncated"`` (``"implicit"`` is
    :func:`adapt_implicit`): the first ``num_steps - exact`` steps stop the gradient through
    the inner gradients, the last ``exact`` do not; empty runs are left out (with
    ``num_steps=0`` both remain, each of 0 steps).
    """
    if spec.mode == "implicit":
        raise ValueError("meta_gradient='implicit' is not a run of SGD steps: use adapt_implicit")
    check_num_steps(spec, num_steps)
    exact_steps = {"exact": num_steps, "first_order": 0}.get(spec.mode, spec.truncate)
    runs = ((num_steps - exact_steps, True), (exact_steps, False))
    return [(steps, first_order) for steps, first_order in runs if steps or num_steps == 0]


def adapt_implicit(
    params: Params,
    inputs: chex.ArrayTree,
    labels: chex.Array,
    *,
    loss_fn: common.LossFn,
    inner_lr: float | Params,
    num_steps: int,
    lam: float,
    cg_steps: int = 20,
    cg_tol: float = 1e-6,
    unroll: int | bool = 1,
) -> tuple[Params, chex.Array]:
    """iMAML's inner loop: gradient descent on ``L_support(φ) + lam/2 |φ - params|²``.

    Args:
      params: meta-parameters ``θ`` (start and proximal anchor).
      inputs: support inputs, leaves ``[support_size, ...]``; labels ``[support_size]``.
      loss_fn: ``(params, inputs, labels) -> (loss, metrics)``.
      inner_lr: step size (scalar or pytree like ``params``).
      num_steps: gradient-descent steps on the proximal objective.
      lam: proximal strength ``> 0``.
      cg_steps, cg_tol: conjugate-gradient budget of the backward linear solve.
      unroll: ``lax.scan`` unroll of the inner loop.

    Returns:
      ``(φ, losses)``; the derivative of ``φ`` w.r.t. ``params`` is the implicit one,
      ``(I + H/lam)^-1`` with ``H`` the support Hessian at ``φ`` (exact at a stationary
      point of the proximal objective). ``losses: [num_steps]`` support losses (no
      proximal term), not differentiated.
    """
    common.check_settings(inner_lr=inner_lr, num_steps=num_steps)
    common.check_inner_lr(inner_lr, params)
    common.check_support(inputs, labels)
    theta = jax.lax.stop_gradient(params)
    support_loss = lambda p: loss_fn(p, inputs, labels)[0]

    def step(phi, _):
        loss, grads = jax.value_and_grad(support_loss)(phi)
        grads = jax.tree.map(lambda g, p, t: g + lam * (p - t), grads, phi, theta)
        return common.sgd_update(phi, grads, inner_lr), loss

    steps = num_steps if unroll is True else max(int(unroll), 1)
    phi, losses = jax.lax.scan(step, theta, None, length=num_steps, unroll=steps)
    phi = jax.lax.stop_gradient(phi)
    return _implicit_link(
        loss_fn, float(lam), cg_steps, float(cg_tol), params, phi, inputs, labels
    ), losses


def proximal_solve(
    loss_fn: common.LossFn,
    phi: Params,
    inputs: chex.ArrayTree,
    labels: chex.Array,
    rhs: Params,
    *,
    lam: float,
    cg_steps: int,
    cg_tol: float,
) -> Params:
    """Solves ``(I + H/lam) x = rhs`` by conjugate gradient, ``H`` the support Hessian at ``phi``.

    ``inputs`` leaves are ``[support_size, ...]``, ``labels: [support_size]``; ``rhs`` and
    the result are pytrees shaped like ``phi``. Hessian-vector products are ``jax.jvp`` of
    ``jax.grad`` (forward over reverse), ``cg_steps`` at most, stopping at relative
    residual ``cg_tol``.
    """
    grad_fn = jax.grad(lambda p: loss_fn(p, inputs, labels)[0])

    def matvec(v):
        hv = jax.jvp(grad_fn, (phi,), (v,))[1]
        return jax.tree.map(lambda a, b: a + b / lam, v, hv)

    return jax.scipy.sparse.linalg.cg(matvec, rhs, tol=cg_tol, atol=0.0, maxiter=cg_steps)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _implicit_link(loss_fn, lam, cg_steps, cg_tol, params, phi, inputs, labels):
    """``phi``, with the implicit derivative ``(I + H/lam)^-1`` back to ``params``."""
    del loss_fn, lam, cg_steps, cg_tol, params, inputs, labels
    return phi


def _implicit_link_fwd(loss_fn, lam, cg_steps, cg_tol, params, phi, inputs, labels):
    return phi, (params, phi, inputs, labels)


def _implicit_link_bwd(loss_fn, lam, cg_steps, cg_tol, residuals, cotangent):
    _, phi, inputs, labels = residuals
    solution = proximal_solve(
        loss_fn, phi, inputs, labels, cotangent, lam=lam, cg_steps=cg_steps, cg_tol=cg_tol
    )
    return (
        solution,
        jax.tree.map(jnp.zeros_like, phi),
        _zero_cotangent(inputs),
        _zero_cotangent(labels),
    )


def _zero_cotangent(tree):
    def zero(x):
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact):
            return jnp.zeros_like(x)
        return np.zeros(jnp.shape(x), jax.dtypes.float0)

    return jax.tree.map(zero, tree)


_implicit_link.defvjp(_implicit_link_fwd, _implicit_link_bwd)


def annealed_first_order(spec: MetaGradient, meta_step: chex.Array | None) -> chex.Array:
    """Traced bool: whether ``meta_step`` is still in the first-order phase of ``spec``."""
    if meta_step is None:
        raise ValueError(
            f"first_order_until={spec.first_order_until} needs meta_step (the traced meta-step "
            "index) passed to the meta-gradient"
        )
    return jnp.asarray(meta_step) < spec.first_order_until


def anneal_order(
    spec: MetaGradient,
    meta_step: chex.Array | None,
    loss_of: Callable[[MetaGradient, Params], Any],
    params: Params,
) -> Any:
    """``loss_of(mode_spec, params)``: first order before ``spec.first_order_until``, else ``spec.mode``.

    The two are the branches of one ``lax.cond`` on the traced ``meta_step`` (see
    :func:`annealed_first_order`); each branch gets ``spec`` with that mode and no annealing.
    """
    early = annealed_first_order(spec, meta_step)

    def branch(mode: str) -> Callable[[Params], Any]:
        return functools.partial(loss_of, spec._replace(mode=mode, first_order_until=0))

    return jax.lax.cond(early, branch("first_order"), branch(spec.mode), params)
