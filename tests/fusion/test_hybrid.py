"""Tests for HybridFusion against a numpy oracle."""

import numpy as np

from mmjax.fusion import HybridFusion


def test_is_masked_mean_of_early_and_modality_heads(fusion_inputs):
    features, mask = fusion_inputs.features(), fusion_inputs.MASK
    module = HybridFusion(num_classes=4)
    params = fusion_inputs.random_params(module, features, mask)
    p = params["params"]
    out, state = module.apply(
        params,
        fusion_inputs.corrupt_masked(features, mask, 2, "random"),
        mask,
        mutable=["intermediates"],
    )
    mask = mask.T  # the oracle stacks modalities first: [M, B]
    masked = [
        np.where(mask[m][:, None], np.asarray(x, np.float64), 0) for m, x in enumerate(features)
    ]
    early = np.concatenate(masked + [mask.T], axis=-1) @ p["early_head"]["kernel"]
    early = early + p["early_head"]["bias"]
    heads = [x @ p[f"head_{m}"]["kernel"] + p[f"head_{m}"]["bias"] for m, x in enumerate(masked)]
    expected = (early + sum(h * mask[m][:, None] for m, h in enumerate(heads))) / (1 + mask.sum(0))[
        :, None
    ]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    (weights,) = state["intermediates"]["weights"]
    sources = np.concatenate([np.ones((1, 5), bool), mask])
    np.testing.assert_allclose(weights, sources / sources.sum(0), rtol=1e-6)


def test_learned_weighting_starts_as_the_mean(fusion_inputs):
    features, mask = fusion_inputs.features(), fusion_inputs.MASK
    mean, learned = HybridFusion(num_classes=4), HybridFusion(num_classes=4, weighting="learned")
    params = fusion_inputs.random_params(mean, features, mask)
    learned_params = {"params": {**params["params"], "source_logits": np.zeros(4, np.float32)}}
    np.testing.assert_allclose(
        learned.apply(learned_params, features, mask),
        mean.apply(params, features, mask),
        rtol=1e-6,
    )
    learned_params["params"]["source_logits"] = np.array([9.0, 0, 0, 0], np.float32)
    out = learned.apply(learned_params, features, mask)
    assert not np.allclose(out, mean.apply(params, features, mask))
