"""mmjax: multimodal few-shot meta-learning in JAX."""
