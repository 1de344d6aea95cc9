"""Meta-gradient modes: iMAML against closed forms, truncation and annealing at their ends."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from mmjax.data.episodes import Episode
from mmjax.meta import maml
from mmjax.meta.meta_gradients import MetaGradient, meta_gradient_spec
from mmjax.meta.step import make_step
from mmjax.nn import MLP

WAYS, SHOTS, QUERIES = 3, 2, 2


def _f64(tree):
    return jax.tree.map(
        lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


def _mlp_model():
    return MLP(hidden_sizes=(5, WAYS), activation=jnp.tanh)


def _mlp_setup(tasks: int = 3, seed: int = 0):
    """A tiny MLP classifier and ``tasks`` episodes of 4-dim inputs (float64 under x64)."""
    model = _mlp_model()
    keys = jax.random.split(jax.random.key(seed), 3)
    episodes = Episode(
        jax.random.normal(keys[0], (tasks, WAYS * SHOTS, 4)),
        jnp.tile(jnp.repeat(jnp.arange(WAYS), SHOTS), (tasks, 1)),
        jax.random.normal(keys[1], (tasks, WAYS * QUERIES, 4)),
        jnp.tile(jnp.repeat(jnp.arange(WAYS), QUERIES), (tasks, 1)),
    )
    params = model.init(keys[2], episodes.support_inputs[0])
    if jax.config.jax_enable_x64:
        params, episodes = _f64(params), _f64(episodes)
    return maml.classification_loss(model.apply), params, episodes


def _task(episodes, i):
    return jax.tree.map(lambda x: x[i], episodes)


def _grad(loss_fn, params, episode, **settings):
    return jax.grad(lambda p: maml.task_loss(p, episode, loss_fn=loss_fn, **settings)[0])(params)


def _rel_error(a, b):
    a, b = ravel_pytree(a)[0], ravel_pytree(b)[0]
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def test_implicit_gradient_equals_the_closed_form_of_a_proximal_least_squares():
    """φ* = (A + λI)^-1 (b + λθ), so dL_query(φ*)/dθ = λ (A + λI)^-1 ∇L_query(φ*)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(6, 4)), rng.normal(size=6)
        z, t = rng.normal(size=(5, 4)), rng.normal(size=5)
        theta, lam = {"w": jnp.asarray(rng.normal(size=4))}, 0.7

        def loss_fn(params, inputs, targets):
            loss = 0.5 * jnp.mean((inputs @ params["w"] - targets) ** 2)
            return loss, {"loss": loss}

        episode = Episode(jnp.asarray(x), jnp.asarray(y), jnp.asarray(z), jnp.asarray(t))
        spec = MetaGradient("implicit", lam=lam, cg_steps=8, cg_tol=1e-14)
        grads = jax.jit(
            lambda p: _grad(loss_fn, p, episode, inner_lr=0.2, num_steps=400, meta_gradient=spec)
        )(theta)
        a, b = x.T @ x / 6, x.T @ y / 6
        phi = np.linalg.solve(a + lam * np.eye(4), b + lam * np.asarray(theta["w"]))
        query_grad = z.T @ (z @ phi - t) / 5
        expected = lam * np.linalg.solve(a + lam * np.eye(4), query_grad)
        np.testing.assert_allclose(grads["w"], expected, rtol=1e-6, atol=1e-12)
        # Not the exact gradient through the 400 steps of the proximal-free inner loop:
        plain = jax.jit(lambda p: _grad(loss_fn, p, episode, inner_lr=0.2, num_steps=400))(theta)
        assert _rel_error(plain, {"w": expected}) > 1e-2


def test_cg_solve_equals_a_dense_solve_of_the_implicit_system_on_an_mlp():
    """The meta-gradient is x with (I + H/λ) x = ∇L_query(φ), H the dense support Hessian."""
    with jax.enable_x64(True):
        loss_fn, params, episodes = _mlp_setup(tasks=1)
        episode, lam = _task(episodes, 0), 2.0
        spec = MetaGradient("implicit", lam=lam, cg_steps=200, cg_tol=1e-13)
        settings = {"inner_lr": 0.2, "num_steps": 20, "meta_gradient": spec}
        grads = jax.jit(lambda p: _grad(loss_fn, p, episode, **settings))(params)
        phi, _ = jax.jit(
            lambda p: maml.adapt(
                p, episode.support_inputs, episode.support_labels, loss_fn=loss_fn, **settings
            )
        )(params)
        flat_phi, unravel = ravel_pytree(phi)
        support = lambda v: loss_fn(unravel(v), episode.support_inputs, episode.support_labels)[0]
        hessian = jax.jit(jax.hessian(support))(flat_phi)
        system = np.eye(flat_phi.size) + np.asarray(hessian) / lam
        assert np.linalg.eigvalsh(system).min() > 0  # CG's premise
        query = lambda v: loss_fn(unravel(v), episode.query_inputs, episode.query_labels)[0]
        expected = np.linalg.solve(system, np.asarray(jax.jit(jax.grad(query))(flat_phi)))
        np.testing.assert_allclose(ravel_pytree(grads)[0], expected, rtol=1e-6, atol=1e-10)
        # A 2-step CG budget is measurably worse: the solve, not luck, makes the match.
        few = MetaGradient("implicit", lam=lam, cg_steps=2, cg_tol=0.0)
        rough = jax.jit(lambda p: _grad(loss_fn, p, episode, **{**settings, "meta_gradient": few}))(
            params
        )
        assert _rel_error(rough, unravel(jnp.asarray(expected))) > 1e-4


def test_truncation_at_its_ends_is_exact_and_first_order_and_between_is_neither():
    with jax.enable_x64(True):
        loss_fn, params, episodes = _mlp_setup(tasks=1)
        episode, steps = _task(episodes, 0), 3
        grad = jax.jit(
            lambda p, mg: _grad(
                loss_fn, p, episode, inner_lr=0.5, num_steps=steps, meta_gradient=mg
            ),
            static_argnums=1,
        )
        exact, first = grad(params, "exact"), grad(params, "first_order")
        truncated = lambda k: grad(params, MetaGradient("truncated", truncate=k))
        chex.assert_trees_all_close(truncated(steps), exact, rtol=1e-12, atol=1e-14)
        chex.assert_trees_all_close(truncated(0), first, rtol=1e-12, atol=1e-14)
        chex.assert_trees_all_close(grad(params, "first_order"), _grad(
            loss_fn, params, episode, inner_lr=0.5, num_steps=steps, first_order=True
        ), rtol=1e-12)  # fmt: skip
        middle = truncated(1)
        assert _rel_error(middle, exact) > 1e-4 and _rel_error(middle, first) > 1e-4
        with pytest.raises(ValueError, match=r"truncate must be in \[0, num_steps=3\]; got 4"):
            truncated(4)


def test_annealing_switches_to_exact_at_the_configured_meta_step_in_one_program():
    loss_fn, params, episodes = _mlp_setup(tasks=2)
    optimizer = optax.sgd(0.0)  # params unchanged, so each step's gradient is comparable
    settings = {"inner_lr": 0.5, "num_steps": 2, "task_batching": "vmap"}
    spec = MetaGradient("exact", first_order_until=5)
    annealed = jax.jit(functools.partial(maml.meta_grad, loss_fn=loss_fn, meta_gradient=spec,
                                         **settings))  # fmt: skip
    plain = jax.jit(functools.partial(maml.meta_grad, loss_fn=loss_fn, **settings),
                    static_argnames="first_order")  # fmt: skip
    exact, first = plain(params, episodes)[0], plain(params, episodes, first_order=True)[0]
    assert _rel_error(first, exact) > 1e-3
    for step, expected in ((0, first), (4, first), (5, exact), (100, exact)):
        grads = annealed(params, episodes, meta_step=jnp.asarray(step))[0]
        chex.assert_trees_all_close(grads, expected, rtol=1e-5, atol=1e-7)
    assert annealed._cache_size() == 1  # one compiled program for both phases
    learner = maml.maml_learner(_mlp_model(), inner_lr=0.5, num_inner_steps=2,
                                task_batching="vmap", meta_gradient=spec)  # fmt: skip
    assert learner.takes_meta_step
    train_step = make_step(learner, optimizer)
    out = train_step(params, optimizer.init(params), episodes, jnp.asarray(7))
    assert set(out[2]) == {"loss", "accuracy", "support_loss"}
    with pytest.raises(ValueError, match="needs meta_step"):
        maml.meta_grad(params, episodes, loss_fn=loss_fn, meta_gradient=spec, **settings)


# "exact" and "first_order" by name are the original path, which
# tests/meta/test_task_batching.py already compares with a per-task loop.
MODES = (
    MetaGradient("truncated", truncate=1),
    MetaGradient("implicit", lam=2.0, cg_steps=30, cg_tol=1e-12),
    MetaGradient("exact", first_order_until=3),
)


@pytest.mark.parametrize("meta_gradient", MODES, ids=lambda m: str(m)[:40])
def test_every_mode_under_every_task_batching_equals_a_per_task_loop(meta_gradient):
    with jax.enable_x64(True):
        loss_fn, params, episodes = _mlp_setup(tasks=3)
        settings = {"inner_lr": 0.4, "num_steps": 2, "meta_gradient": meta_gradient}
        meta_step = jnp.asarray(4)  # past first_order_until: the annealed mode is exact here
        one_task = jax.jit(lambda p, e: _grad(loss_fn, p, e, meta_step=meta_step, **settings))
        per_task = [one_task(params, _task(episodes, i)) for i in range(3)]
        loop_mean = jax.tree.map(lambda *g: sum(g) / 3, *per_task)
        for batching in ("vmap", "scan", 2):
            grads, metrics = jax.jit(
                functools.partial(
                    maml.meta_grad, loss_fn=loss_fn, task_batching=batching, **settings
                )
            )(params, episodes, meta_step=meta_step)
            chex.assert_trees_all_close(grads, loop_mean, rtol=1e-9, atol=1e-12)
            assert set(metrics) == {"loss", "accuracy", "support_loss"}


def test_bad_settings_name_the_argument():
    with pytest.raises(ValueError, match="meta_gradient must be one of"):
        meta_gradient_spec("second_order")
    with pytest.raises(ValueError, match="needs truncate"):
        meta_gradient_spec("truncated")
    with pytest.raises(ValueError, match="lam must be > 0"):
        meta_gradient_spec("implicit", lam=0.0)
    with pytest.raises(ValueError, match="cg_steps must be an int >= 1"):
        meta_gradient_spec("implicit", cg_steps=0)
    with pytest.raises(ValueError, match="first_order=True conflicts"):
        meta_gradient_spec("implicit", first_order=True)
    with pytest.raises(ValueError, match="first_order_until must be an int >= 0"):
        meta_gradient_spec("exact", first_order_until=-1)
    assert meta_gradient_spec("exact", first_order=True).mode == "first_order"


def test_configs_build_learners_with_every_mode():
    from mmjax import configs
    from mmjax.train import builders

    overrides = {
        "maml.meta_gradient='implicit'": ("imaml", False),
        "maml.meta_gradient='truncated'": ("maml", False),
        "maml.first_order_until=100": ("maml", True),
        "maml.first_order=True": ("fomaml", False),
    }
    for override, (name, takes_meta_step) in overrides.items():
        config = configs.apply_overrides(configs.get_config("omniglot_maml_5w1s"), [override])
        learner = builders.build_learner(config, builders.build_model(config))
        assert (learner.name, learner.takes_meta_step) == (name, takes_meta_step), override
    config = configs.get_config("omniglot_mamlpp_5w1s")
    assert "maml" not in config
    learner = builders.build_learner(config, builders.build_model(config))
    assert (learner.name, learner.takes_meta_step) == ("mamlpp", True)
    bad = configs.apply_overrides(configs.get_config("omniglot_maml_5w1s"),
                                  ["maml.meta_gradient='truncated'", "maml.truncate=2"])  # fmt: skip
    with pytest.raises(ValueError, match=r"config.maml: truncate must be in \[0, num_steps=1\]"):
        builders.build_learner(bad, builders.build_model(bad))


@pytest.mark.parametrize(
    "meta_gradient",
    [MetaGradient("implicit", lam=2.0, cg_steps=30), MetaGradient("exact", first_order_until=3)],
    ids=["implicit", "annealed"],
)
def test_sharded_step_equals_the_single_device_step(meta_gradient):
    from mmjax.meta import parallel

    if jax.device_count() < 8:
        pytest.skip("needs 8 (forced host) devices")
    loss_fn, params, episodes = _mlp_setup(tasks=8)
    optimizer = optax.sgd(0.1)
    learner = maml.maml_learner(_mlp_model(), inner_lr=0.4, num_inner_steps=2,
                                task_batching="vmap", meta_gradient=meta_gradient)  # fmt: skip
    extra = (jnp.asarray(1),) if meta_gradient.annealed else ()
    single = make_step(learner, optimizer, jit=False)
    want, _, _ = jax.jit(single)(params, optimizer.init(params), episodes, *extra)
    mesh = parallel.task_mesh()
    step = make_step(learner, optimizer, mesh=mesh)
    got, _, _ = step(
        parallel.place_replicated(params, mesh),
        parallel.place_replicated(optimizer.init(params), mesh),
        parallel.place_tasks(episodes, mesh),
        *(parallel.place_replicated(x, mesh) for x in extra),
    )
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)
