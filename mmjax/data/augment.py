"""On-device data augmentation: random crop with zero padding and horizontal flip.

The augmentation of ResNet-12 ProtoNet / MetaOptNet training (``RandomCrop(size,
padding=p)`` + ``RandomHorizontalFlip()`` in torchvision), as a pure function of a key, so it
runs inside the jitted training step (``config.augment``; off by default).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def augment(
    key: chex.PRNGKey, images: chex.Array, *, padding: int = 4, flip: bool = True
) -> chex.Array:
    """Randomly crops (after zero padding) and horizontally flips each image independently.

    Args:
      key: PRNG key.
      images: ``[..., height, width, channels]``; every leading index is one image.
      padding: zero pixels added on each side before an ``height x width`` crop at a
        uniformly random offset in ``[0, 2 * padding]`` (0: no crop).
      flip: flip each image left-right with probability 1/2.

    Returns:
      ``[..., height, width, channels]``, same dtype.
    """
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding={padding!r} must be an int >= 0")
    if images.ndim < 3:
        raise ValueError(f"images must be [..., height, width, channels]; got {images.shape}")
    shape = images.shape
    flat = images.reshape((-1,) + shape[-3:])
    n, height, width, channels = flat.shape
    crop_key, flip_key = jax.random.split(key)
    if padding:
        padded = jnp.pad(flat, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
        offsets = jax.random.randint(crop_key, (n, 2), 0, 2 * padding + 1)
        flat = jax.vmap(
            lambda image, offset: jax.lax.dynamic_slice(
                image, (offset[0], offset[1], 0), (height, width, channels)
            )
        )(padded, offsets)
    if flip:
        flips = jax.random.bernoulli(flip_key, 0.5, (n,))
        flat = jnp.where(flips[:, None, None, None], flat[:, :, ::-1], flat)
    return flat.reshape(shape)


def augment_episodes(key: chex.PRNGKey, episodes, *, padding: int = 4, flip: bool = True):
    """`augment` of an `Episode`'s support and query images (labels unchanged).

    Args:
      key: PRNG key (split into one key for the support set, one for the query set).
      episodes: `mmjax.data.episodes.Episode` with image inputs ``[..., H, W, C]``.
      padding, flip: see `augment`.

    Raises:
      ValueError: the inputs are a pytree (e.g. image + strokes), not an image array.
    """
    if not hasattr(episodes.support_inputs, "ndim"):
        raise ValueError("augment_episodes needs image inputs, not a pytree (multimodal data)")
    support_key, query_key = jax.random.split(key)
    return episodes._replace(
        support_inputs=augment(support_key, episodes.support_inputs, padding=padding, flip=flip),
        query_inputs=augment(query_key, episodes.query_inputs, padding=padding, flip=flip),
    )
