"""Command line: ``mmjax train --config NAME [--set key=value ...]`` and ``mmjax evaluate``."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Sequence

from mmjax import configs


def _episode_count(text: str) -> int:
    """``--episodes`` value: an int >= 2 (a 95% confidence interval needs two episodes)."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 2:
        raise argparse.ArgumentTypeError(
            f"--episodes={text!r} must be an int >= 2 (episodes scored for a 95% CI)"
        )
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmjax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="meta-train, then evaluate on the meta-test split")
    train.add_argument(
        "--config",
        default="quick",
        help=f"config name ({', '.join(configs.available_configs())}), "
        "<module>:<key=value,...> (e.g. omniglot:algorithm=anil,ways=20; see docs/configs.md) "
        "or a .py file",
    )
    train.add_argument(
        "--workdir",
        default=None,
        help="output directory (default: ./workdir/<config>); rerun to resume",
    )
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set maml.first_order=True",
    )
    train.add_argument(
        "--data_dir", default=None, help="folder holding omniglot/ (default: $MMJAX_DATA_DIR)"
    )
    train.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    train.add_argument(
        "--override",
        action="store_true",
        help="resume a run with a changed config (recorded in <workdir>/config_history.jsonl)",
    )
    train.add_argument(
        "--distributed",
        action="store_true",
        help="multi-host run: every process runs this command over the global mesh "
        "(needs --set parallel=sharded and one workdir shared by all hosts)",
    )
    train.add_argument(
        "--coordinator",
        default=None,
        metavar="HOST:PORT",
        help="with --distributed: process 0's address (default: $JAX_COORDINATOR_ADDRESS; "
        "on a TPU pod / SLURM / Open MPI job JAX detects it)",
    )
    train.add_argument(
        "--num_processes", type=int, default=None, help="with --distributed ($JAX_NUM_PROCESSES)"
    )
    train.add_argument(
        "--process_id", type=int, default=None, help="with --distributed ($JAX_PROCESS_ID)"
    )

    evaluate = sub.add_parser("evaluate", help="evaluate a trained run's latest checkpoint")
    evaluate.add_argument("--checkpoint", required=True, help="the run's workdir")
    evaluate.add_argument("--split", default="test", choices=("train", "val", "test"))
    evaluate.add_argument(
        "--episodes",
        type=_episode_count,
        default=None,
        help="number of episodes, >= 2 (default: config.test_episodes)",
    )
    evaluate.add_argument("--data_dir", default=None)
    evaluate.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="e.g. --set maml.eval_num_inner_steps=10",
    )
    return parser


def _train(args) -> int:
    from mmjax.train import distributed
    from mmjax.train.loop import train

    config = configs.get_config(args.config)
    overrides = list(args.overrides)
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    config = configs.apply_overrides(config, overrides)
    launch = (args.coordinator, args.num_processes, args.process_id)
    if not args.distributed and any(value is not None for value in launch):
        raise ValueError("--coordinator/--num_processes/--process_id need --distributed")
    if args.distributed or os.environ.get("JAX_COORDINATOR_ADDRESS"):
        if config.parallel != "sharded":
            raise ValueError(
                f"--distributed needs config.parallel='sharded' (got {config.parallel!r}, "
                "which would train one model per process): add --set parallel=sharded"
            )
        distributed.initialize(*launch)
    name = os.path.splitext(os.path.basename(args.config))[0]
    if not args.config.endswith(".py"):  # "omniglot:ways=20,..." -> "omniglot_ways_20_..."
        name = re.sub(r"[:,=/]+", "_", args.config)
    workdir = args.workdir or os.path.join("workdir", name)
    print(f"mmjax train: config {args.config!r}, workdir {workdir}")
    results = train(config, workdir, progress=not args.no_progress, override=args.override)
    distributed.finish()
    print(json.dumps(results, indent=2))
    return 0


def _evaluate(args) -> int:
    from mmjax.train.restore import evaluate_checkpoint

    overrides = list(args.overrides)
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    results = evaluate_checkpoint(
        args.checkpoint, split=args.split, num_episodes=args.episodes, overrides=overrides
    )
    print(json.dumps(results, indent=2))
    return 0


# Modules whose TypeErrors are about the user's input (a config value of the wrong type, a
# config section a learner does not accept); a TypeError raised anywhere else is a bug.
_CONFIG_MODULES = ("mmjax.configs", "mmjax.train.builders")


def _is_bad_input(error: BaseException) -> bool:
    """Whether ``error`` is bad user input (exit 2, one line) rather than a bug (traceback).

    ``ValueError`` / ``FileNotFoundError`` are mmjax's input checks. A ``TypeError`` counts only
    when raised by config parsing (its innermost frame is in :data:`_CONFIG_MODULES`).
    """
    if isinstance(error, (ValueError, FileNotFoundError)):
        return True
    if not isinstance(error, TypeError) or error.__traceback__ is None:
        return False
    frame = error.__traceback__
    while frame.tb_next is not None:
        frame = frame.tb_next
    module = frame.tb_frame.f_globals.get("__name__", "")
    return any(module == m or module.startswith(m + ".") for m in _CONFIG_MODULES)


def main(argv: Sequence[str] | None = None) -> int:
    """``mmjax train`` / ``mmjax evaluate``; returns the process exit status.

    Bad input (an unknown config or key, a value of the wrong type, a missing file) exits 2
    with a one-line message; any other error propagates with its traceback.
    """
    args = _parser().parse_args(argv)
    try:
        return {"train": _train, "evaluate": _evaluate}[args.command](args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        if not _is_bad_input(error):
            raise
        print(f"mmjax {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
