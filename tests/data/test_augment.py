"""augment: random crop with zero padding + horizontal flip, checked against a NumPy oracle."""

import jax
import numpy as np
import pytest

from mmjax.data.augment import augment


def test_each_output_is_a_shifted_possibly_flipped_crop():
    images = np.random.default_rng(0).uniform(0.1, 1.0, (2, 6, 8, 8, 3)).astype(np.float32)
    out = np.asarray(jax.jit(lambda k, x: augment(k, x, padding=2))(jax.random.PRNGKey(3), images))
    assert out.shape == images.shape and out.dtype == images.dtype
    padded = np.pad(images.reshape(-1, 8, 8, 3), ((0, 0), (2, 2), (2, 2), (0, 0)))
    flipped = 0
    for got, source in zip(out.reshape(-1, 8, 8, 3), padded):
        crops = [(dy, dx, source[dy : dy + 8, dx : dx + 8]) for dy in range(5) for dx in range(5)]
        candidates = [
            f
            for _, _, c in crops
            for f in (False, True)
            if np.array_equal(got, c[:, ::-1] if f else c)
        ]
        assert candidates, "output is no crop of the padded image"
        flipped += all(candidates)
    assert 0 < flipped < 12  # both outcomes occur over 12 images
    assert not np.array_equal(out, images)


def test_keys_and_switches():
    images = np.random.default_rng(1).uniform(size=(4, 5, 5, 1)).astype(np.float32)
    key = jax.random.PRNGKey(0)
    crop_flip = jax.jit(augment)
    np.testing.assert_array_equal(crop_flip(key, images), crop_flip(key, images))
    assert not np.array_equal(crop_flip(key, images), crop_flip(jax.random.PRNGKey(1), images))
    identity = jax.jit(lambda k, x: augment(k, x, padding=0, flip=False))
    np.testing.assert_array_equal(identity(key, images), images)
    with pytest.raises(ValueError, match="padding=-1"):
        augment(key, images, padding=-1)
