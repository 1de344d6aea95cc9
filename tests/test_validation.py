"""Every public entry point refuses bad input with an error naming the argument, its value and
what was expected (issue #8). One row per error path; the modules' own test files hold the
deeper checks (hypothesis properties in tests/data, config errors in tests/train/test_loop.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mmjax
from mmjax import configs, data, fusion, meta, nn, train
from mmjax.cli import main as cli_main
from mmjax.data import archives, modality, regression
from mmjax.train import loop

KEY = jax.random.PRNGKey(0)
CLASSES = jnp.zeros((6, 4, 3))  # [classes, examples, features]
MODEL = nn.Classifier(nn.MLP((4,)), num_classes=3)
X, Y = jnp.ones((6, 5)), jnp.arange(6) % 3  # support: 6 examples of 5 features, 3 ways


@pytest.fixture(scope="module")
def params():
    return MODEL.init(KEY, X)


def _loss():
    return meta.classification_loss(MODEL.apply)


def _episode(mask_support, mask_query=None):
    mask_query = mask_support if mask_query is None else mask_query

    def inputs(mask):
        return {"image": jnp.zeros((len(mask), 2, 2, 1)), "mask": jnp.asarray(mask, jnp.float32)}

    labels = jnp.zeros(len(mask_support), jnp.int32)
    return data.Episode(inputs(mask_support), labels, inputs(mask_query), labels)


def _config(*overrides):
    return configs.apply_overrides(configs.get_config("quick"), list(overrides))


FEATURES = [jnp.ones((3, 4)), jnp.ones((3, 5))]

# (id, call, exception, regex the message must match)
# fmt: off
CASES = [
    # --- data: episode sampling ---
    ("ways>classes", lambda p: data.sample_episode(KEY, CLASSES, ways=7, shots=1, queries=1),
     ValueError, r"ways=7 exceeds the 6 classes available"),
    ("shots+queries>examples",
     lambda p: data.sample_episodes(KEY, CLASSES, batch_size=2, ways=2, shots=3, queries=2),
     ValueError, r"shots \+ queries = 5 \(shots=3, queries=2\) exceeds the 4 examples per class"),
    ("zero shots", lambda p: data.sample_episode(KEY, CLASSES, ways=2, shots=0, queries=1),
     ValueError, r"shots=0 must be an int >= 1"),
    ("negative queries", lambda p: data.sample_episode(KEY, CLASSES, ways=2, shots=1, queries=-2),
     ValueError, r"queries=-2 must be an int >= 1"),
    ("zero batch",
     lambda p: data.sample_episodes(KEY, CLASSES, batch_size=0, ways=2, shots=1, queries=1),
     ValueError, r"batch_size=0 must be an int >= 1"),
    ("data rank 1", lambda p: data.sample_episode(KEY, jnp.zeros(6), ways=1, shots=1, queries=1),
     ValueError, r"data leaf <root> has shape \(6,\); expected \[classes, examples, ...\]"),
    ("leaves disagree",
     lambda p: data.sample_episode(
         KEY, {"a": CLASSES, "b": jnp.zeros((6, 3))}, ways=1, shots=1, queries=1),
     ValueError, r"data leaf \['b'\] has \[classes, examples\] = \(6, 3\)"),
    # --- data: archives, images, strokes ---
    ("archive name", lambda p: archives.archive_path("../x"),
     ValueError, r"name='../x' is not an archive name"),
    ("subset", lambda p: data.load_omniglot_subset("small3"),
     ValueError, r"subset='small3' is not one of"),
    ("image_size", lambda p: data.load_omniglot_subset("background_small1", image_size=0),
     ValueError, r"image_size=0 must be a positive int"),
    ("stroke length", lambda p: data.load_omniglot_strokes("background_small1", length=0),
     ValueError, r"length=0 must be an int >= 2"),
    ("images rank",
     lambda p: data.ClassImages(np.zeros((2, 3, 4, 4), np.float32), ("a", "b"), np.zeros((2, 3))),
     ValueError, r"images must be a numpy array \[classes, examples, height, width, 1 \| 3\]"),
    ("images dtype",
     lambda p: data.ClassImages(np.zeros((2, 3, 4, 4, 1), np.uint8), ("a", "b"),
                                np.zeros((2, 3), str)),
     ValueError, r"images must be floating point in \[0, 1\], got dtype uint8"),
    # --- data: modality masks ---
    ("dropout rate", lambda p: modality.dropout_mask(KEY, jnp.ones((3, 2)), rate=0.7),
     ValueError, r"rate=0.7 must be a number in \[0, 0.5\]"),
    ("condition", lambda p: modality.apply_condition(_episode([[1, 1]]), "image"),
     ValueError, r"condition='image' is not one of"),
    ("episode all modalities off",
     lambda p: modality.apply_condition(_episode([[1, 1], [0, 0]]), "both"),
     ValueError, r"support_inputs\['mask'\] has 1 samples with every modality off \(first at "
                 r"index \(1,\)\)"),
    ("condition leaves nothing",
     lambda p: modality.apply_condition(_episode([[1, 0]]), "strokes_only"),
     ValueError, r"support_inputs\['mask'\] has 1 samples with every modality off"),
    ("mask shape", lambda p: modality.apply_condition(_episode(np.ones((2, 3))), "both"),
     ValueError, r"support_inputs\['mask'\] has shape \(2, 3\); expected \[..., samples, 2\]"),
    # --- data: regression tasks ---
    ("num_modes",
     lambda p: regression.sample_regression_tasks(KEY, num_modes=4, batch_size=2, shots=1,
                                                  queries=1),
     ValueError, r"num_modes=4 is not one of \[2, 3, 5\]"),
    ("regression shots",
     lambda p: regression.sample_regression_tasks(KEY, num_modes=2, batch_size=2, shots=0,
                                                  queries=1),
     ValueError, r"shots=0 must be an int >= 1"),
    # --- fusion ---
    ("fusion name", lambda p: fusion.make_fusion("concatt"),
     ValueError, r"Unknown fusion method 'concatt'. Did you mean 'concat'\?"),
    ("fusion all modalities off",
     lambda p: fusion.ConcatFusion().init(KEY, FEATURES, jnp.array([[1, 0, 1], [1, 0, 1]])),
     ValueError, r"mask of shape \(2, 3\) has samples with every modality masked: \[1\]"),
    ("fusion mask shape", lambda p: fusion.ConcatFusion().init(KEY, FEATURES, jnp.ones((3, 2))),
     ValueError, r"mask has shape \(3, 2\); expected \(num_modalities, batch\) = \(2, 3\)"),
    ("fusion feature rank",
     lambda p: fusion.validate_features([jnp.ones(3), jnp.ones((3, 5))], jnp.ones((2, 3))),
     ValueError, r"features\[0\] has shape \(3,\); expected a rank-2 array \[batch, D_0\]"),
    ("fusion batch mismatch",
     lambda p: fusion.validate_features([jnp.ones((3, 4)), jnp.ones((2, 5))], jnp.ones((2, 3))),
     ValueError, r"features\[1\] has shape \(2, 5\); expected batch size 3"),
    # --- nn ---
    ("classifier ways", lambda p: nn.Classifier(nn.MLP((4,)), num_classes=0).init(KEY, X),
     ValueError, r"Classifier num_classes=0 must be an int >= 1"),
    ("mlp size", lambda p: nn.MLP((4, 0)).init(KEY, X),
     ValueError, r"MLP hidden_sizes\[1\]=0 must be an int >= 1 \(hidden_sizes=\(4, 0\)\)"),
    ("conv4 rank", lambda p: nn.Conv4(features=4).init(KEY, jnp.zeros((2, 28, 28))),
     ValueError, r"Conv4 input x must be \[batch, height, width, channels\]; got shape "
                 r"\(2, 28, 28\)"),
    ("conv4 features", lambda p: nn.Conv4(features=0).init(KEY, jnp.zeros((2, 28, 28, 1))),
     ValueError, r"Conv4 features=0 must be an int >= 1"),
    ("stroke encoder shape", lambda p: nn.StrokeEncoder().init(KEY, jnp.zeros((2, 10, 4))),
     ValueError, r"x has shape \(2, 10, 4\); expected \[batch, length, 3\]"),
    # --- meta ---
    ("adapt steps",
     lambda p: meta.adapt(p, X, Y, loss_fn=_loss(), inner_lr=0.1, num_steps=-1),
     ValueError, r"num_steps must be an int >= 0; got -1"),
    ("adapt zero rate",
     lambda p: meta.adapt(p, X, Y, loss_fn=_loss(), inner_lr=0.0, num_steps=1),
     ValueError, r"inner_lr must be > 0; got 0.0"),
    ("adapt negative rate",
     lambda p: meta.adapt(p, X, Y, loss_fn=_loss(), inner_lr=-0.5, num_steps=1),
     ValueError, r"inner_lr must be > 0; got -0.5"),
    ("adapt labels count",
     lambda p: meta.adapt(p, X, Y[:4], loss_fn=_loss(), inner_lr=0.1, num_steps=1),
     ValueError, r"inputs leaf <root> has shape \(6, 5\) but labels has shape \(4,\); "
                 r"expected \[4, ...\]"),
    ("float labels", lambda p: _loss()(p, X, Y.astype(jnp.float32)),
     TypeError, r"labels must be integer class ids in \[0, ways\); got dtype float32"),
    ("labels shape", lambda p: _loss()(p, X, Y[:, None]),
     ValueError, r"labels has shape \(6, 1\); expected \(6,\)"),
    ("per-parameter rates",
     lambda p: meta.adapt(p, X, Y, loss_fn=_loss(), num_steps=1,
                          inner_lr=jax.tree.map(lambda x: jnp.ones(x.shape + (2,)), p)),
     ValueError, r"inner_lr leaf .* has shape .*; expected \(\) or"),
    ("meta step steps",
     lambda p: meta.make_meta_train_step(_loss(), optax.sgd(0.1), inner_lr=0.1, num_steps=1.5),
     ValueError, r"num_steps must be an int >= 0; got 1.5"),
    ("meta step rate",
     lambda p: meta.make_meta_train_step(_loss(), optax.sgd(0.1), inner_lr=-1.0, num_steps=1),
     ValueError, r"inner_lr must be > 0; got -1.0"),
    ("learner name", lambda p: meta.make_learner("mamll", MODEL),
     ValueError, r"unknown algorithm 'mamll' \(did you mean 'maml'\?\)"),
    ("learner steps", lambda p: meta.maml_learner(MODEL, inner_lr=0.1, num_inner_steps=-1),
     ValueError, r"num_steps must be an int >= 0; got -1"),
    ("protonet distance", lambda p: meta.make_learner("protonet", MODEL, distance="cos"),
     ValueError, r"distance='cos' is not one of euclidean, cosine"),
    ("mesh devices", lambda p: meta.task_mesh([]),
     ValueError, r"devices must be a non-empty 1-D sequence of jax devices; got shape \(0,\)"),
    ("pmap batch", lambda p: meta.shard_for_pmap(jnp.zeros((5, 2)), 2),
     ValueError, r"meta batch size 5 is not divisible by the 2 devices"),
    # --- train ---
    ("evaluate episodes",
     lambda p: train.evaluate_learner(meta.maml_learner(MODEL, inner_lr=0.1, num_inner_steps=1),
                                      p, CLASSES, KEY, ways=3, shots=1, queries=1,
                                      num_episodes=1),
     ValueError, r"num_episodes must be >= 2 for a confidence interval; got 1"),
    ("evaluate ways",
     lambda p: train.evaluate_learner(meta.maml_learner(MODEL, inner_lr=0.1, num_inner_steps=1),
                                      p, CLASSES, KEY, ways=8, shots=1, queries=1,
                                      num_episodes=4),
     ValueError, r"ways=8 exceeds the 6 classes available"),
    ("confidence interval", lambda p: train.confidence_interval(np.array([0.5])),
     ValueError, r"values must be 1-D with at least 2 entries; got shape \(1,\)"),
    ("checkpoints kept", lambda p: train.Checkpointer("/nonexistent", max_to_keep=0),
     ValueError, r"max_to_keep=0 must be an int >= 1"),
    ("config steps", lambda p: loop.validate_config(_config("num_steps=0")),
     ValueError, r"config.num_steps must be an int >= 1; got 0"),
    ("config kept", lambda p: loop.validate_config(_config("keep_checkpoints=-1")),
     ValueError, r"config.keep_checkpoints must be an int >= 1; got -1"),
    ("config nan policy", lambda p: loop.validate_config(_config("nan_policy='ignore'")),
     ValueError, r"config.nan_policy='ignore' is not one of \('stop', 'skip'\)"),
    ("config learning rate",
     lambda p: train.builders.build_optimizer(_config("optimizer.learning_rate=0.0")),
     ValueError, r"optimizer.learning_rate must be > 0; got 0.0"),
    ("evaluate split", lambda p: train.evaluate_checkpoint("/nonexistent", split="dev"),
     ValueError, r"split='dev' is not one of \('train', 'val', 'test'\)"),
    # --- configs ---
    ("config name", lambda p: mmjax.get_config("quik"),
     ValueError, r"unknown config 'quik'; did you mean 'quick'\?"),
    ("config key", lambda p: mmjax.apply_overrides(_config(), ["optimizer.learning_rat=1e-3"]),
     ValueError, r"unknown config key 'optimizer.learning_rat'; did you mean "
                 r"'optimizer.learning_rate'\?"),
    ("config value type", lambda p: mmjax.apply_overrides(_config(), ["num_steps='many'"]),
     TypeError, r"config key 'num_steps' expects int; got \"'many'\" \(str\)"),
    ("config bool", lambda p: mmjax.apply_overrides(_config(), ["maml.first_order=1"]),
     TypeError, r"config key 'maml.first_order' expects a bool \(True/False\); got '1'"),
    ("override syntax", lambda p: mmjax.apply_overrides(_config(), ["num_steps"]),
     ValueError, r"--set expects key=value; got 'num_steps'"),
]
# fmt: on


@pytest.mark.parametrize("call, error, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_error(params, call, error, message):
    with pytest.raises(error, match=message):
        call(params)


def test_every_case_has_a_distinct_id():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))


def test_adapt_checks_before_tracing_and_still_runs_under_jit(params):
    """The checks read static shapes only, so a traced learning rate is accepted."""
    step = jax.jit(lambda p, lr: meta.adapt(p, X, Y, loss_fn=_loss(), inner_lr=lr, num_steps=1)[1])
    assert np.isfinite(step(params, 0.1)).all()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--config", "quik"], "unknown config 'quik'; did you mean 'quick'?"),
        (
            ["train", "--set", "maml.inner_lrr=0.1"],
            "unknown config key 'maml.inner_lrr'; did you mean 'maml.inner_lr'?",
        ),
        (["train", "--set", "shots"], "--set expects key=value; got 'shots'"),
        (["evaluate", "--checkpoint", "/nonexistent"], "no config.json"),
    ],
)
def test_cli_errors_exit_2_with_the_message(tmp_path, capsys, argv, message):
    if argv[0] == "train":
        argv = argv + ["--workdir", str(tmp_path)]
    assert cli_main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_episode_count_is_checked_by_the_parser(capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(["evaluate", "--checkpoint", "w", "--episodes", "0"])
    assert info.value.code == 2
    assert "--episodes='0' must be an int >= 2" in capsys.readouterr().err


def test_user_config_file_with_a_misspelt_key_is_refused(tmp_path):
    template = (
        "from mmjax.configs import quick\n\n\n"
        "def get_config():\n"
        "    config = quick.get_config()\n"
        "    {line}\n"
        "    return config\n"
    )
    good = tmp_path / "good.py"
    good.write_text(template.format(line="config.maml.inner_lr = 0.1"))
    config = mmjax.get_config(str(good))
    assert config.maml.inner_lr == 0.1 and config.num_steps == mmjax.get_config("quick").num_steps
    bad = tmp_path / "bad.py"
    bad.write_text(template.format(line="config.maml.inner_lrr = 0.1"))
    with pytest.raises(
        ValueError, match=r"bad\.py: unknown config key 'maml\.inner_lrr'; did you mean 'maml\.inner_lr'\?"
    ):
        mmjax.get_config(str(bad))
