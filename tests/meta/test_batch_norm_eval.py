"""Batch-norm evaluation modes: outside "transductive", a query's logits ignore other queries."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.data.episodes import Episode
from mmjax.meta import batch_norm_eval, make_learner
from mmjax.nn import Classifier, Conv4

WAYS = 3


def _setup():
    model = Classifier(Conv4(features=4, num_blocks=2, conv_impl="im2col"), num_classes=WAYS)
    keys = jax.random.split(jax.random.key(0), 3)
    support = jax.random.uniform(keys[0], (WAYS, 8, 8, 1))
    query = jax.random.uniform(keys[1], (2 * WAYS, 8, 8, 1))
    return model, model.init(keys[2], support), support, query


@pytest.mark.parametrize("mode", batch_norm_eval.EVAL_BATCH_NORMS)
def test_perturbing_one_query_moves_other_logits_only_transductively(mode):
    model, params, support, query = _setup()
    logits = jax.jit(
        lambda q: batch_norm_eval.query_logits(model.apply, params, support, q, mode=mode)
    )
    before = logits(query)
    after = logits(query.at[0].multiply(3.0).at[0].add(1.0))
    chex.assert_shape(before, (2 * WAYS, WAYS))
    assert float(jnp.max(jnp.abs(after[0] - before[0]))) > 1e-3  # the perturbed query moves
    others = float(jnp.max(jnp.abs(after[1:] - before[1:])))
    if mode == "transductive":
        assert others > 1e-4  # the whole query set shares the statistics
    else:
        assert others == 0.0
    if mode == "with_support":  # equals a forward pass of support + that one query
        alone = model.apply(params, jnp.concatenate([support, query[2:3]]))[-1]
        np.testing.assert_allclose(before[2], alone, rtol=1e-5, atol=1e-6)


def test_learner_evaluates_in_the_mode_it_reports():
    model, params, support, query = _setup()
    episodes = Episode(
        support[None], jnp.arange(WAYS)[None], query[None], jnp.tile(jnp.arange(WAYS), 2)[None]
    )
    results = {}
    for mode in batch_norm_eval.EVAL_BATCH_NORMS:
        learner = make_learner("maml", model, inner_lr=0.4, num_inner_steps=1, eval_batch_norm=mode)
        assert learner.eval_batch_norm == mode
        results[mode] = jax.jit(learner.evaluate)(params, episodes)
        assert set(results[mode]) == {"loss", "accuracy", "support_loss"}
    assert not np.allclose(results["transductive"]["loss"], results["per_query"]["loss"])
    with pytest.raises(ValueError, match="eval_batch_norm must be one of"):
        make_learner("maml", model, inner_lr=0.4, num_inner_steps=1, eval_batch_norm="running")
