"""Error rate of a trained 20-way model on the 20 one-shot runs of Lake et al. (2015).

    mmjax train --config omniglot_maml_20w1s --workdir runs/maml20
    python benchmarks/lake_runs.py --workdir runs/maml20 --out lake_runs.md

Prints (and optionally writes) a Markdown table of the mean error over the 20 runs beside
the figures reported in the paper (`mmjax.train.one_shot_runs.PAPER_ERROR_RATES`).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Sequence

from mmjax.train.one_shot_runs import format_report, score_workdir


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="workdir of a 20-way `mmjax train` run")
    parser.add_argument("--data_dir", default=None, help="folder holding omniglot/all_runs.zip")
    parser.add_argument("--out", default=None, help="write the Markdown report here (+ .json)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, e.g. --set maml.eval_num_inner_steps=10",
    )
    args = parser.parse_args(argv)
    result = score_workdir(args.workdir, data_dir=args.data_dir, overrides=args.overrides)
    name = f"{result['algorithm']} ({os.path.basename(os.path.normpath(args.workdir))})"
    report = format_report(result, name=name)
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)
        with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
            json.dump(
                dict(result, error_per_run=list(map(float, result["error_per_run"]))), f, indent=2
            )
    return result


if __name__ == "__main__":
    main()
