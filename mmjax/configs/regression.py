"""MMAML regression protocol (Vuorio et al. 2019): K-shot regression on a mixture of functions.

Short names ``regression_<n>modes_5shot`` (`CONFIG_NAMES`), or ``get_config("num_modes=3,
algorithm=maml")`` over `SPEC`. ``num_modes``: 2 (sinusoid + linear), 3 (+ quadratic) or 5
(+ l1 norm + tanh); ``algorithm``: ``maml``, ``multi_maml`` or ``mmaml``, with its inner
settings from ``mmjax.configs.defaults``. Noise std 0.3; budget sized for a CPU.

The schema is the classification one (``data``, ``model``, ``config.<algorithm>``,
``optimizer``); ``mmjax train`` and :func:`mmjax.train.builders.run_regression` run it with
``mmjax.train.regression`` (``benchmarks/regression_table.py`` runs the three methods).
"""

from __future__ import annotations

import ml_collections

from mmjax.configs import defaults, parse_arg

ALGORITHMS = defaults.offered("regression")
SPEC = {"num_modes": 5, "shots": 5, "algorithm": "mmaml"}
CHOICES = {"num_modes": (2, 3, 5), "algorithm": ALGORITHMS}
CONFIG_NAMES: dict[str, str] = {f"regression_{n}modes_5shot": f"num_modes={n}" for n in (2, 3, 5)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The regression experiment named by ``arg`` (a `CONFIG_NAMES` key or ``"key=value,..."``).

    Raises:
      ValueError: an unknown key or value (naming the allowed ones and the closest).
    """
    spec = parse_arg(CONFIG_NAMES.get(arg, arg), source="regression", choices=CHOICES, **SPEC)
    if spec.shots < 1:
        raise ValueError(f"regression: shots={spec.shots} must be >= 1")
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.data = ml_collections.ConfigDict(
        {"name": "regression", "num_modes": spec.num_modes, "noise_std": 0.3}
    )
    config.model = ml_collections.ConfigDict({"encoder": "mlp", "hidden_sizes": (40, 40)})
    config.shots = spec.shots
    config.queries = 10
    config.meta_batch_size = 25
    config.algorithm = spec.algorithm  # "maml", "multi_maml" (one MAML per mode) or "mmaml"
    config[spec.algorithm] = ml_collections.ConfigDict(
        defaults.settings(spec.algorithm, "regression")
    )
    # grad_clip_norm 0 disables clipping; the regression trainer's optimizer is Adam.
    config.optimizer = ml_collections.ConfigDict(
        {"name": "adam", "learning_rate": 1e-3, "grad_clip_norm": 10.0}
    )
    config.num_steps = 3000
    config.log_every = 100
    config.eval_tasks_per_mode = 200
    return config
