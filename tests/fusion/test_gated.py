"""Tests for GatedFusion (gated multimodal unit) against a numpy oracle."""

import numpy as np

from mmjax.fusion import GatedFusion


def test_gated_fusion_matches_numpy_and_gates_are_masked(fusion_inputs):
    features, mask = fusion_inputs.features(), fusion_inputs.MASK
    module = GatedFusion(features_out=4)
    params = fusion_inputs.random_params(module, features, mask)
    p = params["params"]
    out, state = module.apply(
        params,
        fusion_inputs.corrupt_masked(features, mask, 2, "nonfinite"),
        mask,
        mutable=["intermediates"],
    )
    mask = mask.T  # the oracle stacks modalities first: [M, B]
    masked = [
        np.where(mask[m][:, None], np.asarray(x, np.float64), 0) for m, x in enumerate(features)
    ]
    context = np.concatenate(masked + [mask.T], axis=-1)
    expected = np.zeros((5, 4))
    for m, x in enumerate(masked):
        hidden = np.tanh(x @ p[f"project_{m}"]["kernel"] + p[f"project_{m}"]["bias"])
        gate = 1 / (1 + np.exp(-(context @ p[f"gate_{m}"]["kernel"] + p[f"gate_{m}"]["bias"])))
        expected += mask[m][:, None] * gate * hidden
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    (gates,) = state["intermediates"]["weights"]
    gates = np.asarray(gates)
    assert gates.shape == (3, 5, 4)
    np.testing.assert_array_equal(gates[~mask], 0.0)
    assert np.all((gates[mask] > 0) & (gates[mask] < 1))
