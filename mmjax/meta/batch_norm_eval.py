"""Batch-norm evaluation modes: transductive query statistics, or each query on its own.

A network whose batch norm uses the current batch's statistics (``mmjax.nn.BatchStatNorm``,
as in MAML) is *transductive* when it scores a task's whole query set as one batch: each
query's logits depend on the other queries. The modes here:

- ``"transductive"``: the query set is one batch (the MAML reference code, and mmjax's
  default);
- ``"with_support"``: each query is normalised with the statistics of the support set plus
  itself (one forward pass of ``support ∪ {query}`` per query);
- ``"per_query"``: each query alone is a batch (statistics over its own spatial positions).

In the last two a query's logits do not depend on any other query.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax

Params = Any
EVAL_BATCH_NORMS = ("transductive", "with_support", "per_query")


def check_eval_batch_norm(mode: str) -> str:
    """Returns ``mode`` if it is one of ``EVAL_BATCH_NORMS``; else raises ``ValueError``."""
    if mode not in EVAL_BATCH_NORMS:
        raise ValueError(f"eval_batch_norm must be one of {EVAL_BATCH_NORMS}; got {mode!r}")
    return mode


def query_logits(
    apply_fn: Callable[[Params, chex.ArrayTree], chex.Array],
    params: Params,
    support_inputs: chex.ArrayTree,
    query_inputs: chex.ArrayTree,
    *,
    mode: str,
) -> chex.Array:
    """Logits ``[num_queries, ways]`` of ``query_inputs`` (leaves ``[num_queries, ...]``).

    ``support_inputs`` (leaves ``[support_size, ...]``) is used by ``"with_support"`` only.
    """
    check_eval_batch_norm(mode)
    if mode == "transductive":
        return apply_fn(params, query_inputs)

    def one(query):  # leaves [...]: one query, no batch axis
        single = jax.tree.map(lambda x: x[None], query)
        if mode == "per_query":
            return apply_fn(params, single)[0]
        batch = jax.tree.map(lambda s, q: jnp.concatenate([s, q]), support_inputs, single)
        return apply_fn(params, batch)[-1]

    return jax.vmap(one)(query_inputs)


def query_metrics(
    apply_fn: Callable[[Params, chex.ArrayTree], chex.Array],
    params: Params,
    support_inputs: chex.ArrayTree,
    query_inputs: chex.ArrayTree,
    query_labels: chex.Array,
    *,
    mode: str,
) -> tuple[chex.Array, dict]:
    """Mean cross-entropy and ``{"loss", "accuracy"}`` of the queries under ``mode``.

    ``query_labels: [num_queries]`` ints; the loss and metrics are scalars.
    """
    logits = query_logits(apply_fn, params, support_inputs, query_inputs, mode=mode)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, query_labels).mean()
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == query_labels)
    return loss, {"loss": loss, "accuracy": accuracy}
