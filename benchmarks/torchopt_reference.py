"""TorchOpt reference timing: iMAML meta-steps with ``torchopt.diff.implicit.custom_root``.

Run by ``benchmarks/maml_orders.py --torchopt_python PYTHON`` for ``implicit`` rows, in an
interpreter that has torch, learn2learn and torchopt (none is a dependency of mmjax). The model
is learn2learn's ``OmniglotCNN`` / ``MiniImagenetCNN``, as in ``l2l_reference.py``. The inner
problem mirrors mmjax's ``adapt_implicit``: ``inner_steps`` of plain gradient descent (step
``inner_lr``) from theta on ``L_support(phi) + lam/2 ||phi - theta||^2``; the meta-gradient is
TorchOpt's implicit differentiation of the stationarity condition, solved by
``torchopt.linear_solve.solve_cg(maxiter=cg_steps)``, per task as in TorchOpt's iMAML example;
then one Adam (1e-3) step. Prints one JSON line. ``--self_check`` instead compares the implicit
meta-gradient with a dense solve of ``(H + lam I) x = g`` on a tiny problem and prints it.
"""

from __future__ import annotations

import argparse
import json


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--order", choices=["implicit"], default="implicit")
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
    parser.add_argument("--inner_lr", type=float, default=0.4)
    parser.add_argument("--lam", type=float, default=1.0)
    parser.add_argument("--cg_steps", type=int, default=20)
    parser.add_argument(
        "--cg_tol", type=float, default=1e-6, help="CG relative residual tolerance (mmjax's)"
    )
    parser.add_argument("--self_check", action="store_true", help="dense-solve check, no timing")
    return parser


def make_imaml(
    model, loss, inner_steps: int, inner_lr: float, lam: float, cg_steps: int, cg_tol: float
):
    """Returns ``adapt(theta, x, y) -> phi``, differentiable in theta by TorchOpt's implicit rule."""
    import torch
    import torchopt
    from torch.func import functional_call

    names = [n for n, _ in model.named_parameters()]

    def support_loss(phi, x, y):
        return loss(functional_call(model, dict(zip(names, phi)), (x,)), y)

    def stationarity(phi, theta, x, y):
        # d/dphi [L_support(phi) + lam/2 ||phi - theta||^2] = 0 at the inner solution.
        grads = torch.func.grad(support_loss)(phi, x, y)  # functorch: runs under TorchOpt's vjp
        return tuple(g + lam * (p - t) for g, p, t in zip(grads, phi, theta))

    @torchopt.diff.implicit.custom_root(
        stationarity, argnums=1, solve=torchopt.linear_solve.solve_cg(maxiter=cg_steps, rtol=cg_tol)
    )
    def adapt(phi, theta, x, y):
        phi = tuple(p.detach().requires_grad_() for p in phi)
        theta = tuple(t.detach() for t in theta)
        for _ in range(inner_steps):
            with torch.enable_grad():
                grads = torch.autograd.grad(support_loss(phi, x, y), phi)
            phi = tuple(
                (p - inner_lr * (g + lam * (p - t))).detach().requires_grad_()
                for p, g, t in zip(phi, grads, theta)
            )
        return phi

    return names, adapt


def build_model(dataset: str, ways: int, features: int):
    """learn2learn's OmniglotCNN / MiniImagenetCNN (as l2l_reference.py), made functional-safe."""
    import learn2learn as l2l
    import torch

    if dataset == "miniimagenet":
        model = l2l.vision.models.MiniImagenetCNN(ways, hidden_size=features, layers=4)
    else:
        model = l2l.vision.models.OmniglotCNN(ways, hidden_size=features)
    # The same forward (classifier(features(x))) without OmniglotCNN's alias ``base`` of
    # ``features[1]``: torch.func.functional_call restores a module reachable by two names
    # wrongly (after a call its parameters were left as phi's tensors).
    model = torch.nn.Sequential(model.features, model.classifier)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            # Batch statistics, as in training mode, without the running-average update: an
            # in-place buffer write is not allowed inside torch.func's transforms.
            module.track_running_stats = False
            module.running_mean = module.running_var = module.num_batches_tracked = None
    return model


def self_check(args) -> dict:
    """Implicit meta-gradient of a tiny OmniglotCNN vs a dense solve of (H + lam I) x = g."""
    import torch
    from torch.func import functional_call

    torch.manual_seed(0)
    torch.set_default_dtype(torch.float64)
    model = build_model("omniglot", ways=3, features=2).double()  # the timed network, tiny
    loss = torch.nn.CrossEntropyLoss()
    xs, ys = torch.rand(6, 1, 28, 28), torch.arange(3).repeat(2)
    xq, yq = torch.rand(9, 1, 28, 28), torch.arange(3).repeat(3)
    # Many inner steps so phi is at the proximal solution, where the implicit rule is exact.
    steps, lr, lam = 400, 0.2, args.lam
    names, adapt = make_imaml(model, loss, steps, lr, lam, cg_steps=200, cg_tol=1e-12)
    theta = tuple(p.detach().clone().requires_grad_() for p in model.parameters())
    phi = adapt(theta, theta, xs, ys)
    query = loss(functional_call(model, dict(zip(names, phi)), (xq,)), yq)
    implicit = torch.cat([g.reshape(-1) for g in torch.autograd.grad(query, theta)])
    # Dense: dphi/dtheta = lam (H + lam I)^-1, so the meta-gradient is lam (H + lam I)^-1 g_q.
    flat = torch.cat([p.detach().reshape(-1) for p in phi])
    shapes = [p.shape for p in phi]

    def unflatten(v):
        out, i = [], 0
        for s in shapes:
            n = int(torch.tensor(s).prod()) if len(s) else 1
            out.append(v[i : i + n].reshape(s))
            i += n
        return out

    def support(v):
        return loss(functional_call(model, dict(zip(names, unflatten(v))), (xs,)), ys)

    def query_loss(v):
        return loss(functional_call(model, dict(zip(names, unflatten(v))), (xq,)), yq)

    hessian = torch.autograd.functional.hessian(support, flat)
    g_query = torch.autograd.functional.jacobian(query_loss, flat)
    dense = lam * torch.linalg.solve(hessian + lam * torch.eye(len(flat)), g_query)
    residual = torch.autograd.functional.jacobian(support, flat) + lam * (
        flat - torch.cat([t.detach().reshape(-1) for t in theta])
    )
    return dict(
        self_check="torchopt implicit vs dense (H + lam I)^-1 solve",
        params=len(flat),
        lam=lam,
        inner_steps=steps,
        stationarity_residual=float(residual.norm()),
        rel_l2_error=float((implicit - dense).norm() / dense.norm()),
        cosine=float(implicit @ dense / (implicit.norm() * dense.norm())),
        grad_norm=float(dense.norm()),
    )


def main() -> None:
    args = _parser().parse_args()
    for name in ("inner_steps", "ways", "shots", "queries", "meta_batch", "repeats", "cg_steps"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be >= 1; got {getattr(args, name)}")
    if args.lam <= 0 or args.cg_tol < 0:
        raise SystemExit(f"--lam must be > 0 and --cg_tol >= 0; got {args.lam}, {args.cg_tol}")
    import learn2learn as l2l
    import torch
    import torchopt
    from torch.func import functional_call

    # The timing loop and JSON line are l2l_reference.py's (this folder is on sys.path when
    # it runs as a script; the package path when it is imported).
    try:
        from l2l_reference import print_timing
    except ImportError:
        from benchmarks.l2l_reference import print_timing

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.self_check:
        check = self_check(args)
        print(json.dumps(check))
        if not check["rel_l2_error"] < 1e-8:
            raise SystemExit(f"self-check failed: rel_l2_error {check['rel_l2_error']:.3g} >= 1e-8")
        return
    torch.manual_seed(0)
    channels = 3 if args.dataset == "miniimagenet" else 1
    model = build_model(args.dataset, args.ways, args.features)
    loss = torch.nn.CrossEntropyLoss()
    names, adapt = make_imaml(
        model, loss, args.inner_steps, args.inner_lr, args.lam, args.cg_steps, args.cg_tol
    )
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    size, ways = args.image_size, args.ways
    support_x = torch.rand(args.meta_batch, ways * args.shots, channels, size, size)
    support_y = torch.arange(ways).repeat_interleave(args.shots)
    query_x = torch.rand(args.meta_batch, ways * args.queries, channels, size, size)
    query_y = torch.arange(ways).repeat_interleave(args.queries)

    def meta_step() -> None:
        optimizer.zero_grad()
        theta = tuple(model.parameters())
        for task in range(args.meta_batch):
            phi = adapt(theta, theta, support_x[task], support_y)
            query = loss(functional_call(model, dict(zip(names, phi)), (query_x[task],)), query_y)
            (query / args.meta_batch).backward()
        optimizer.step()

    parameters = list(model.parameters())
    meta_step()  # warm-up
    if not all(a is b for a, b in zip(parameters, model.parameters())):
        raise RuntimeError("functional_call did not restore the model's parameters")
    print_timing(
        meta_step,
        args,
        torch,
        framework="torchopt",
        torchopt=torchopt.__version__,
        learn2learn=l2l.__version__,
    )


if __name__ == "__main__":
    main()
