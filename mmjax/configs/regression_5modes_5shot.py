"""MMAML regression protocol (Vuorio et al. 2019): 5-mode mixture, 5-shot, noise std 0.3.

Run by :func:`mmjax.train.regression.run_regression` (``benchmarks/regression_table.py``),
not by ``mmjax train``. ``method``: "maml", "multi_maml" or "mmaml". Budget sized for a CPU.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.method = "mmaml"
    config.num_modes = 5  # 2: sinusoid+linear, 3: +quadratic, 5: +l1_norm+tanh
    config.shots = 5
    config.queries = 10
    config.noise_std = 0.3
    config.hidden_sizes = (40, 40)
    config.task_hidden_sizes = (40,)  # MMAML task encoder
    config.inner_lr = 0.001
    config.num_inner_steps = 5
    config.eval_num_inner_steps = 5
    config.first_order = False
    config.meta_batch_size = 25
    config.learning_rate = 1e-3
    config.grad_clip_norm = 10.0  # 0 disables
    config.num_steps = 3000
    config.log_every = 100
    config.eval_tasks_per_mode = 200
    return config
