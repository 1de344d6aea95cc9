"""learn2learn reference timing: ``l2l.algorithms.MAML`` + ``OmniglotCNN`` meta-steps.

``--dataset miniimagenet`` times ``MiniImagenetCNN`` (Conv-4 with max-pool) on 84x84x3
inputs instead, ``--backbone resnet12`` learn2learn's ``ResNet12`` (its default widths).

Run by ``benchmarks/maml_orders.py --l2l_python PYTHON`` in an interpreter that has torch and
learn2learn (neither is a dependency of mmjax). Mirrors learn2learn's own
``examples/vision/maml_omniglot.py`` meta-step: for each task of the meta-batch, clone the
learner, adapt on the support set, backpropagate the query loss; then one Adam step.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--order", choices=["second", "first"], default="second")
    parser.add_argument("--inner_steps", type=int, default=1)
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--meta_batch", type=int, default=32)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--image_size", type=int, default=28)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--dataset", choices=["omniglot", "miniimagenet"], default="omniglot")
    parser.add_argument("--backbone", choices=["conv4", "resnet12"], default="conv4")
    parser.add_argument("--inner_lr", type=float, default=0.4)
    args = parser.parse_args()

    import learn2learn as l2l
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    channels = 3 if args.dataset == "miniimagenet" else 1
    if args.backbone == "resnet12":
        model = l2l.vision.models.ResNet12(args.ways)
    elif args.dataset == "miniimagenet":
        model = l2l.vision.models.MiniImagenetCNN(args.ways, hidden_size=args.features, layers=4)
    else:
        model = l2l.vision.models.OmniglotCNN(args.ways, hidden_size=args.features)
    maml = l2l.algorithms.MAML(model, lr=args.inner_lr, first_order=args.order == "first")
    optimizer = torch.optim.Adam(maml.parameters(), 1e-3)
    loss = torch.nn.CrossEntropyLoss()
    size, ways = args.image_size, args.ways
    support_x = torch.rand(args.meta_batch, ways * args.shots, channels, size, size)
    support_y = torch.arange(ways).repeat_interleave(args.shots)
    query_x = torch.rand(args.meta_batch, ways * args.queries, channels, size, size)
    query_y = torch.arange(ways).repeat_interleave(args.queries)

    def meta_step() -> None:
        optimizer.zero_grad()
        for task in range(args.meta_batch):
            learner = maml.clone()
            for _ in range(args.inner_steps):
                learner.adapt(loss(learner(support_x[task]), support_y))
            (loss(learner(query_x[task]), query_y) / args.meta_batch).backward()
        optimizer.step()

    meta_step()  # warm-up
    print_timing(meta_step, args, torch, framework="learn2learn", learn2learn=l2l.__version__)


def print_timing(meta_step, args, torch, **fields) -> None:
    """Times ``args.repeats`` calls of ``meta_step`` (after the caller's warm-up) and prints
    one JSON line: the arguments, ``fields``, the median step in s, tasks/s and peak RSS.

    Shared with ``torchopt_reference.py``, so both references report the same way.
    """
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        meta_step()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(
        json.dumps(
            dict(
                vars(args),
                **fields,
                torch=torch.__version__,
                threads=torch.get_num_threads(),
                step_s=round(median, 5),
                tasks_per_s=round(args.meta_batch / median, 2),
                peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            )
        )
    )


if __name__ == "__main__":
    main()
