"""The episodic meta-training loop: config + workdir in, checkpoints, logs and metrics out.

Episodes are sampled on device inside the jitted step from device-resident class arrays,
with the sampler's PRNG key part of the training state, so a resumed run is bit-identical
to an uninterrupted one. Checkpoints are orbax (atomic); SIGTERM/SIGINT save a final
checkpoint and exit cleanly; a non-finite meta-loss stops the run (or skips the step)
without ever overwriting the last good checkpoint.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import time
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from mmjax import storage
from mmjax.data import modality
from mmjax.data.augment import augment_episodes
from mmjax.data.episodes import classes_and_examples, sample_episodes, validate_episode_spec
from mmjax.meta.learner import MetaLearner
from mmjax.meta.parallel import TASK_AXIS, task_mesh
from mmjax.meta.step import meta_update
from mmjax.train import builders, distributed, throughput
from mmjax.train import workdir as workdirs
from mmjax.train.checkpoint import Checkpointer
from mmjax.train.evaluate import evaluate_learner
from mmjax.train.logging import MetricsWriter, plot_learning_curve

PARALLEL_MODES = ("none", "sharded")
NAN_POLICIES = ("stop", "skip")


class NonFiniteLossError(FloatingPointError):
    """Raised when a meta-step produces a non-finite loss or gradient (``nan_policy="stop"``)."""


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue exactly: step, parameters, optimizer, sampler key."""

    step: jax.Array
    params: Any
    opt_state: Any
    key: jax.Array  # raw uint32 key data of the episode sampler


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ``ValueError`` naming the first out-of-range setting (classification configs)."""
    positive = {
        "ways": config.ways,
        "shots": config.shots,
        "queries": config.queries,
        "meta_batch_size": config.meta_batch_size,
        "num_steps": config.num_steps,
        "log_every": config.log_every,
        "eval_every": config.eval_every,
        "checkpoint_every": config.checkpoint_every,
        "test_episodes": config.test_episodes,
        "eval_batch_size": config.eval_batch_size,
        "val_episodes": config.val_episodes,
        "keep_checkpoints": config.keep_checkpoints,
    }
    for name, value in positive.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"config.{name} must be an int >= 1; got {value!r}")
    if config.ways < 2:
        raise ValueError(
            f"config.ways must be an int >= 2; got {config.ways!r} (a 1-way episode is "
            "classified correctly by any model: accuracy 100% +- 0)"
        )
    if config.test_episodes < 2 or config.val_episodes < 2:
        raise ValueError("config.test_episodes and config.val_episodes must be >= 2 (for a CI)")
    if config.parallel not in PARALLEL_MODES:
        raise ValueError(f"config.parallel={config.parallel!r} is not one of {PARALLEL_MODES}")
    if config.nan_policy not in NAN_POLICIES:
        raise ValueError(f"config.nan_policy={config.nan_policy!r} is not one of {NAN_POLICIES}")
    if config.parallel == "sharded" and config.meta_batch_size % jax.device_count():
        raise ValueError(
            f"config.meta_batch_size={config.meta_batch_size} must be divisible by the "
            f"{jax.device_count()} devices for parallel='sharded'"
        )


def make_train_step(
    config: ml_collections.ConfigDict,
    learner: MetaLearner,
    optimizer: optax.GradientTransformation,
):
    """Builds the jitted ``step(state, data) -> (state, metrics)``.

    Samples ``meta_batch_size`` episodes on device, takes one meta-step of ``learner`` and
    skips the update (keeping the old parameters) when the loss or gradient is not finite;
    the metric ``finite`` tells the host which happened. With ``config.augment.enabled``
    (default off) the support and query images are randomly cropped and flipped
    (`mmjax.data.augment.augment_episodes`) with a key derived from the sampling key.

    Multimodal data only: ``config.train_condition`` (default ``"both"``) fixes the modality
    presence of the training episodes (`mmjax.data.modality.apply_condition`, e.g.
    ``"image_only"`` for a single-modality baseline), then ``config.modality_dropout``
    (default 0) drops modalities at random (`mmjax.data.modality.modality_dropout`) with a
    key split from the sampling key; with both at their defaults the step is unchanged.
    """
    dropout_rate = config.get("modality_dropout", 0.0)
    train_condition = config.get("train_condition", "both")
    if dropout_rate != 0:
        modality.check_rate(dropout_rate)
    modality.condition_masks(train_condition)  # validates the name
    sample = functools.partial(
        sample_episodes,
        batch_size=config.meta_batch_size,
        ways=config.ways,
        shots=config.shots,
        queries=config.queries,
    )
    augmentation = None  # config.augment: random crop + flip of the training episodes
    if config.get("augment") is not None and config.augment.enabled:
        augmentation = {"padding": config.augment.padding, "flip": config.augment.flip}
    constrain = lambda tree: tree
    if config.parallel == "sharded":
        by_task = NamedSharding(task_mesh(), P(TASK_AXIS))
        constrain = lambda tree: jax.lax.with_sharding_constraint(tree, by_task)

    def step(state: TrainState, data) -> tuple[TrainState, dict]:
        key, sample_key = jax.random.split(state.key)
        if dropout_rate != 0:
            sample_key, dropout_key = jax.random.split(sample_key)
        episodes = sample(sample_key, data)
        if train_condition != "both":
            episodes = modality.apply_condition(episodes, train_condition)
        if dropout_rate != 0:
            episodes = modality.modality_dropout(dropout_key, episodes, rate=dropout_rate)
        if augmentation is not None:
            episodes = augment_episodes(jax.random.fold_in(sample_key, 1), episodes, **augmentation)
        episodes = constrain(episodes)
        params, opt_state, metrics = meta_update(
            learner, optimizer, state.params, state.opt_state, episodes, state.step,
            skip_nonfinite=True,
        )  # fmt: skip
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state, key=key), metrics

    if config.parallel == "sharded":
        replicated = NamedSharding(task_mesh(), P())
        return jax.jit(
            step,
            in_shardings=(replicated, replicated),
            out_shardings=(replicated, replicated),
            donate_argnums=(0,),
        )
    return jax.jit(step, donate_argnums=(0,))


def init_state(
    config: ml_collections.ConfigDict, learner: MetaLearner, optimizer, example_input
) -> TrainState:
    """Initial state from ``config.seed``: parameters, optimizer state and sampler key."""
    init_key, data_key = jax.random.split(jax.random.PRNGKey(config.seed))
    params = learner.init(init_key, example_input)
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params), key=data_key
    )


def build_run(config: ml_collections.ConfigDict):
    """Data splits, learner, optimizer and initial state of a run (before any restore).

    Returns:
      ``(splits, learner, optimizer, state)`` with ``splits`` the device pytrees
      ``{'train', 'val', 'test'}`` (leaves ``[classes, examples, ...]``).
    """
    validate_config(config)
    splits = builders.load_splits(config)
    for name in ("train", "val", "test"):
        validate_episode_spec(
            *classes_and_examples(splits[name]),
            ways=config.ways,
            shots=config.shots,
            queries=config.queries,
        )
    learner = builders.build_learner(config, builders.build_model(config))
    optimizer = builders.build_optimizer(config)
    example = jax.tree.map(lambda x: x[0, : config.shots * config.ways], splits["train"])
    try:
        state = init_state(config, learner, optimizer, example)
    except ValueError as error:  # a learner setting the model cannot take (mamlpp.per_step_bn)
        raise ValueError(
            f"config.{config.algorithm}: {error} (model.encoder={config.model.encoder!r})"
        ) from None
    return splits, learner, optimizer, state


class _StopRequest:
    """Turns SIGTERM/SIGINT into a flag the loop checks after each step."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread: signals cannot be caught there
                pass
        return self

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _write_atomically(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` atomically (`mmjax.storage`: rename, or commit marker)."""
    storage.write_text(path, text)


def _scalars(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items() if k != "finite"}


def train(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    *,
    progress: bool = True,
    override: bool = False,
) -> dict:
    """Meta-trains ``config.algorithm`` as configured, resuming from ``workdir`` if it holds a checkpoint.

    Writes into ``workdir``: ``config.json``, ``checkpoints/`` (orbax), ``metrics.jsonl``,
    ``tensorboard/``, ``results.json`` (final test accuracy ± 95% CI) and
    ``learning_curve.png``. Returns the results dict (``{"interrupted": signal}`` when stopped
    by SIGTERM/SIGINT after a final checkpoint).

    The workdir is locked (``train.lock``) while training. Resuming with a config that
    differs from ``config.json`` is refused unless ``override`` (`mmjax.train.workdir` has the
    rule); a checkpoint that does not restore is moved aside for the previous one. Nothing
    is written before the config is checked and the checkpoint restored. Multi-process
    (`mmjax.train.distributed`): only process 0 locks, writes these files and sets
    checkpoints aside; checkpoints are saved collectively, and the processes agree every
    step on whether to stop.

    A regression config (``data.name="regression"``, ``mmjax.configs.regression``) is run by
    `mmjax.train.builders.run_regression` instead: ``config.json`` and ``results.json`` only.
    """
    if config.data.name == "regression":
        return _train_regression(config, workdir)
    validate_config(config)
    distributed.check_config(config)
    is_writer = distributed.is_writer()
    if is_writer:
        workdir = workdirs.ensure_workdir(workdir)
    distributed.check_shared_workdir(os.fspath(workdir))
    with workdirs.acquire_lock(workdir, writer=is_writer):
        return _train_locked(
            config, os.fspath(workdir), progress=progress, override=override, is_writer=is_writer
        )


def _train_regression(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """Trains and scores a regression config; writes ``config.json`` and ``results.json``."""
    results = builders.run_regression(config)
    os.makedirs(workdir, exist_ok=True)
    for name, value in (("config.json", config.to_dict()), ("results.json", results)):
        with open(os.path.join(workdir, name), "w") as f:
            json.dump(value, f, indent=2)
    return results


def _train_locked(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    progress: bool,
    override: bool,
    is_writer: bool,
) -> dict:
    changes = workdirs.check_identity(workdir, config, override=override)
    splits, learner, optimizer, state = build_run(config)
    splits, state = distributed.to_global((splits, state))
    checkpointer = Checkpointer(
        workdir, max_to_keep=config.keep_checkpoints, clean_up_temporary=is_writer
    )
    for name in checkpointer.removed_temporary:
        print(f"Removed the unfinished checkpoint save {name} (the run was killed during it)")
    if checkpointer.latest_step() is not None:
        try:
            state, _ = checkpointer.restore_newest(state, set_aside=is_writer)
            workdirs.check_num_steps(config, int(state.step), workdir)
        except BaseException:
            checkpointer.close()
            raise
        print(f"Resumed from {checkpointer.directory} at step {int(state.step)}")
    workdirs.record_config(workdir, config, changes, step=int(state.step), writer=is_writer)
    step_fn = make_train_step(config, learner, optimizer)
    evaluate = functools.partial(
        evaluate_learner,
        learner,
        ways=config.ways,
        shots=config.shots,
        queries=config.queries,
        batch_size=config.eval_batch_size,
    )
    eval_key = jax.random.PRNGKey(config.seed + 1)

    writer = MetricsWriter(workdir) if is_writer else distributed.NullWriter()
    start = int(state.step)
    window: list[dict] = []
    last_saved = checkpointer.latest_step()
    skipped = 0
    bar = tqdm(
        total=config.num_steps,
        initial=start,
        desc="meta-train",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        with _StopRequest() as stop:
            for step in range(start + 1, config.num_steps + 1):
                t0 = time.perf_counter()
                state, metrics = step_fn(state, splits["train"])
                metrics = jax.device_get(metrics)
                if not metrics["finite"]:
                    if config.nan_policy == "stop":
                        kept = (
                            f"The last good checkpoint (step {last_saved}) in {checkpointer.directory} "
                            "is kept"
                            if last_saved is not None
                            else "No checkpoint had been saved yet"
                        )
                        raise NonFiniteLossError(
                            f"non-finite meta-loss ({metrics['loss']}) or gradient at step {step}; stopping. "
                            f"{kept}; lower the learning rates, or set "
                            "nan_policy='skip'."
                        )
                    skipped += 1
                    tqdm.write(
                        f"step {step}: non-finite meta-loss, update skipped ({skipped} so far)"
                    )
                else:
                    window.append(dict(_scalars(metrics), step_time=time.perf_counter() - t0))
                bar.update(1)
                if window and (step % config.log_every == 0 or step == config.num_steps):
                    seconds = float(sum(w.pop("step_time") for w in window))
                    mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                    mean["tasks_per_second"] = throughput.tasks_per_second(
                        config.meta_batch_size, len(window), seconds
                    )
                    mean.update(window_steps=len(window), window_seconds=seconds)
                    mean.update(throughput.memory_fields())  # device peak, or host RSS on CPU
                    writer.write(step, "train", mean)
                    bar.set_postfix(throughput.progress_postfix(mean))
                    window = []
                if step % config.eval_every == 0:
                    val = evaluate(
                        state.params, splits["val"], eval_key, num_episodes=config.val_episodes
                    )
                    writer.write(step, "val", {k: v for k, v in val.items() if np.ndim(v) == 0})
                    tqdm.write(
                        f"step {step}: val accuracy {val['accuracy']:.3f} ± {val['accuracy_ci95']:.3f}"
                    )
                if step % config.checkpoint_every == 0 or step == config.num_steps:
                    checkpointer.save(step, state)
                    last_saved = step
                stop_signal = distributed.agree_to_stop(stop.signal)
                if stop_signal:
                    if last_saved != step:
                        checkpointer.save(step, state)
                    tqdm.write(
                        f"{stop_signal} received: checkpoint saved at step {step}; "
                        "run the same command again to resume."
                    )
                    return {"interrupted": stop_signal, "step": step}
    finally:
        bar.close()
        writer.close()
        checkpointer.close()

    test = evaluate(
        state.params,
        splits["test"],
        jax.random.PRNGKey(config.seed + 2),
        num_episodes=config.test_episodes,
        progress=progress,
    )
    results = {
        "test_accuracy": test["accuracy"],
        "test_accuracy_ci95": test["accuracy_ci95"],
        "test_loss": test["loss"],
        "test_episodes": test["num_episodes"],
        "test_batch_norm": test["batch_norm"],
        "steps": int(state.step),
        "skipped_steps": skipped,
        "ways": config.ways,
        "shots": config.shots,
        "algorithm": learner.name,
    }
    if is_writer:
        _write_atomically(storage.join(workdir, "results.json"), json.dumps(results, indent=2))
        plot_learning_curve(
            storage.join(workdir, "metrics.jsonl"),
            storage.join(workdir, "learning_curve.png"),
            title=f"{learner.name.upper()} {config.ways}-way {config.shots}-shot",
        )
    print(
        f"test accuracy {100 * test['accuracy']:.2f}% ± {100 * test['accuracy_ci95']:.2f}% "
        f"(95% CI, {test['num_episodes']} episodes of {config.ways}-way {config.shots}-shot)"
    )
    return results
