"""Every public entry point refuses bad input with an error naming the argument, its value and
what was expected (issue #8). One row per error path; the modules' own test files hold the
deeper checks (hypothesis properties in tests/data, config errors in tests/train/test_loop.py).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mmjax
from mmjax import configs, data, fusion, meta, nn, representation, train
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
ONES = jnp.ones((3, 2))  # fusion mask [B, M] = [batch, modalities]: every modality present
ONE_TASK = data.Episode(X, Y, X, Y)  # no task axis
TASKS = jax.tree.map(lambda x: jnp.stack([x, x]), ONE_TASK)  # [2 tasks, ...]
SETTINGS = {"inner_lr": 0.1, "num_steps": 1}
# Constructor arguments of every fusion layer (small widths).
FUSIONS = {
    "concat": {"features_out": 4},
    "late": {"num_classes": 2},
    "hybrid": {"num_classes": 2},
    "attention": {"features_out": 4},
    "cross_attention": {"features_out": 4, "num_heads": 2},
    "tensor": {"features_out": 4},
    "low_rank_tensor": {"features_out": 4},
    "gated": {"features_out": 4},
    "film": {"features_out": 4},
}


def _rates(value):
    """A per-parameter inner_lr pytree of scalar leaves ``value`` shaped like MODEL's params."""
    return jax.tree.map(lambda _: value, MODEL.init(KEY, X))


def _fusion_on_other_modalities(name, num_modalities):
    """Parameters made for FEATURES' 2 modalities, applied to ``num_modalities``.

    Under ``jax.eval_shape`` everything is traced, as under ``jit``: the check is static.
    """
    layer = fusion.make_fusion(name, **FUSIONS[name])
    layer_params = jax.eval_shape(layer.init, KEY, FEATURES, ONES)  # traced: checks are static
    features = (FEATURES + [jnp.ones((3, 2))])[:num_modalities]
    return jax.eval_shape(layer.apply, layer_params, features, jnp.ones((3, num_modalities)))


def _multimodal(image_dtype=jnp.float32, mask=1.0):
    inputs = {
        "image": jnp.zeros((2, 8, 8, 1), image_dtype),
        "strokes": jnp.zeros((2, 6, 3)),
        "mask": jnp.full((2, 2), mask),
    }
    return nn.MultimodalEncoder(features=4).init(KEY, inputs)


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
     ValueError, (r"support_inputs\['mask'\] has 1 samples with every modality off \(first at "
                  r"index \(1,\)\)")),
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
     lambda p: fusion.ConcatFusion().init(KEY, FEATURES, jnp.array([[1, 1], [0, 0], [1, 1]])),
     ValueError, r"mask of shape \(3, 2\) has samples with every modality masked: \[1\]"),
    ("fusion mask shape", lambda p: fusion.ConcatFusion().init(KEY, FEATURES, jnp.ones((2, 3))),
     ValueError, (r"mask has shape \(2, 3\); expected \[B, M\] = \[batch, num_modalities\] = "
                  r"\[3, 2\]\. It is modality-first \[M, B\]; pass mask\.T\.")),
    ("fusion feature rank",
     lambda p: fusion.common.validate_features([jnp.ones(3), jnp.ones((3, 5))], jnp.ones((3, 2))),
     ValueError, r"features\[0\] has shape \(3,\); expected a rank-2 array \[batch, D_0\]"),
    ("fusion batch mismatch",
     lambda p: fusion.common.validate_features([jnp.ones((3, 4)), jnp.ones((2, 5))],
                                               jnp.ones((3, 2))),
     ValueError, r"features\[1\] has shape \(2, 5\); expected batch size 3"),
    ("fusion mask one half", lambda p: fusion.ConcatFusion().init(KEY, FEATURES, 0.5 * ONES),
     ValueError, r"mask of shape \(3, 2\) must hold only 0/1 \(or booleans\); got values \[0.5\]"),
    ("fusion mask two", lambda p: fusion.LateFusion(2).init(KEY, FEATURES, 2 * ONES),
     ValueError, r"mask of shape \(3, 2\) must hold only 0/1 \(or booleans\); got values \[2.0\]"),
    ("fusion mask nan",
     lambda p: fusion.AttentionFusion(4).init(KEY, FEATURES, ONES.at[0, 0].set(jnp.nan)),
     ValueError, (r"mask of shape \(3, 2\) must hold only 0/1 \(or booleans\); got values "
                  r"\[1.0, nan\]")),
    ("late params for 2 modalities on 1", lambda p: _fusion_on_other_modalities("late", 1),
     ValueError, (r"LateFusion params were made for 2 modalities \(\['head_0', 'head_1'\]\) but "
                  r"features and mask give 1 \(features has one array per modality")),
    ("attention params for 2 modalities on 1",
     lambda p: _fusion_on_other_modalities("attention", 1),
     ValueError, (r"AttentionFusion params were made for 2 modalities \(\['project_0', "
                  r"'project_1'\]\) but features and mask give 1")),
    ("cross attention params for 2 modalities on 1",
     lambda p: _fusion_on_other_modalities("cross_attention", 1),
     ValueError, (r"CrossModalAttention params were made for 2 modalities \(\['project_0', "
                  r"'project_1'\]\) but features and mask give 1")),
    ("low rank tensor params for 2 modalities on 1",
     lambda p: _fusion_on_other_modalities("low_rank_tensor", 1),
     ValueError, (r"LowRankTensorFusion params were made for 2 modalities \(\['factor_0', "
                  r"'factor_1'\]\) but features and mask give 1")),
    ("hybrid params for 2 modalities on 3", lambda p: _fusion_on_other_modalities("hybrid", 3),
     ValueError, (r"HybridFusion params were made for 2 modalities \(\['head_0', 'head_1'\]\) "
                  r"but features and mask give 3")),
    ("gated params for 2 modalities on 1", lambda p: _fusion_on_other_modalities("gated", 1),
     ValueError, (r"GatedFusion params were made for 2 modalities \(\['project_0', "
                  r"'project_1'\]\) but features and mask give 1")),
    ("film params for 2 modalities on 3", lambda p: _fusion_on_other_modalities("film", 3),
     ValueError, (r"FiLMFusion params were made for 2 modalities \(\['condition_1'\]\) but "
                  r"features and mask give 3")),
    ("tensor params for 2 modalities on 1", lambda p: _fusion_on_other_modalities("tensor", 1),
     ValueError, (r"TensorFusion params \(project kernel \(30, 4\)\) take 30 inputs but features "
                  r"of widths \[4\] give 5")),
    ("concat params for 2 modalities on 1", lambda p: _fusion_on_other_modalities("concat", 1),
     ValueError, (r"ConcatFusion params \(project kernel \(11, 4\)\) take 11 inputs but the "
                  r"concatenated features and mask give 5")),
    ("attention zero width", lambda p: fusion.AttentionFusion(0).init(KEY, FEATURES, ONES),
     ValueError, r"AttentionFusion features_out=0 must be an int >= 1"),
    ("cross attention zero width",
     lambda p: fusion.CrossModalAttention(num_heads=2, features_out=0).init(KEY, FEATURES, ONES),
     ValueError, r"CrossModalAttention features_out=0 must be an int >= 1"),
    ("gated negative width", lambda p: fusion.GatedFusion(-4).init(KEY, FEATURES, ONES),
     ValueError, r"GatedFusion features_out=-4 must be an int >= 1"),
    ("low rank tensor zero width",
     lambda p: fusion.LowRankTensorFusion(0).init(KEY, FEATURES, ONES),
     ValueError, r"LowRankTensorFusion features_out=0 must be an int >= 1"),
    ("tensor zero width", lambda p: fusion.TensorFusion(0).init(KEY, FEATURES, ONES),
     ValueError, r"TensorFusion features_out=0 must be an int >= 1"),
    ("film zero width", lambda p: fusion.FiLMFusion(0).init(KEY, FEATURES, ONES),
     ValueError, r"FiLMFusion features_out=0 must be an int >= 1"),
    ("concat zero width", lambda p: fusion.ConcatFusion(0).init(KEY, FEATURES, ONES),
     ValueError, r"ConcatFusion features_out=0 must be an int >= 1"),
    ("late zero classes", lambda p: fusion.LateFusion(0).init(KEY, FEATURES, ONES),
     ValueError, r"LateFusion num_classes=0 must be an int >= 1"),
    ("hybrid negative classes", lambda p: fusion.HybridFusion(-1).init(KEY, FEATURES, ONES),
     ValueError, r"HybridFusion num_classes=-1 must be an int >= 1"),
    # --- nn ---
    ("conv4 uint8 images",
     lambda p: nn.Conv4(features=4).init(KEY, jnp.zeros((2, 8, 8, 1), jnp.uint8)),
     TypeError, (r"Conv4 input x must be floating point; got dtype uint8 \(convert images with "
                 r"x.astype\(jnp.float32\) / 255 for \[0, 1\]\)")),
    ("conv4 int images",
     lambda p: nn.Conv4(features=4).init(KEY, jnp.zeros((2, 8, 8, 1), jnp.int32)),
     TypeError, r"Conv4 input x must be floating point; got dtype int32"),
    ("stroke encoder int strokes",
     lambda p: nn.StrokeEncoder(features=4).init(KEY, jnp.zeros((2, 6, 3), jnp.int32)),
     TypeError, r"StrokeEncoder input x must be floating point; got dtype int32"),
    ("multimodal uint8 image", lambda p: _multimodal(image_dtype=jnp.uint8),
     TypeError, r"inputs\['image'\] must be floating point; got dtype uint8"),
    ("multimodal soft mask", lambda p: _multimodal(mask=0.5),
     ValueError, (r"inputs\['mask'\] must hold only 0/1 \(or booleans\), 1 = modality present; "
                  r"got values \[0.5\]")),
    ("classifier ways", lambda p: nn.Classifier(nn.MLP((4,)), num_classes=0).init(KEY, X),
     ValueError, r"Classifier num_classes=0 must be an int >= 1"),
    ("mlp size", lambda p: nn.MLP((4, 0)).init(KEY, X),
     ValueError, r"MLP hidden_sizes\[1\]=0 must be an int >= 1 \(hidden_sizes=\(4, 0\)\)"),
    ("conv4 rank", lambda p: nn.Conv4(features=4).init(KEY, jnp.zeros((2, 28, 28))),
     ValueError, (r"Conv4 input x must be \[batch, height, width, channels\]; got shape "
                  r"\(2, 28, 28\)")),
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
     ValueError, (r"inputs leaf <root> has shape \(6, 5\) but labels has shape \(4,\); "
                  r"expected \[4, ...\]")),
    ("float labels", lambda p: _loss()(p, X, Y.astype(jnp.float32)),
     TypeError, r"labels must be integer class ids in \[0, ways\); got dtype float32"),
    ("labels shape", lambda p: _loss()(p, X, Y[:, None]),
     ValueError, r"labels has shape \(6, 1\); expected \(6,\)"),
    ("per-parameter rates",
     lambda p: meta.adapt(p, X, Y, loss_fn=_loss(), num_steps=1,
                          inner_lr=jax.tree.map(lambda x: jnp.ones(x.shape + (2,)), p)),
     ValueError, r"inner_lr leaf .* has shape .*; expected \(\) or"),
    ("meta step steps",
     lambda p: meta.make_step(meta.maml_learner(MODEL, inner_lr=0.1, num_inner_steps=1.5), optax.sgd(0.1)),
     ValueError, r"num_steps must be an int >= 0; got 1.5"),
    ("meta step rate",
     lambda p: meta.make_step(meta.maml_learner(MODEL, inner_lr=-1.0, num_inner_steps=1), optax.sgd(0.1)),
     ValueError, r"inner_lr must be > 0; got -1.0"),
    ("query labels above ways", lambda p: _loss()(p, X, Y + 7),
     ValueError, (r"labels must be class ids in \[0, 3\) \(the logits' 3 classes: the model's "
                  r"ways\); got values \[7, 8, 9\] \(first at index \(0,\)\)")),
    ("negative support labels",
     lambda p: meta.adapt(p, X, Y - 3, loss_fn=_loss(), **SETTINGS),
     ValueError, r"labels must be class ids in \[0, 3\) .*; got values \[-3, -2, -1\]"),
    ("classifier narrower than the ways", lambda p: _loss()(p, X, jnp.arange(6) % 5),
     ValueError, (r"labels must be class ids in \[0, 3\) \(the logits' 3 classes: the model's "
                  r"ways\); got values \[3, 4\] \(first at index \(3,\)\)")),
    ("meta_loss query labels absent from support",
     lambda p: meta.maml.meta_loss(p, TASKS._replace(query_labels=TASKS.query_labels + 7),
                              loss_fn=_loss(), **SETTINGS),
     ValueError, (r"episodes.query_labels of task 0 hold \[7, 8, 9\], absent from its "
                  r"support_labels \[0, 1, 2\]")),
    ("meta_grad negative support labels",
     lambda p: meta.maml.meta_grad(p, TASKS._replace(support_labels=TASKS.support_labels - 3),
                              loss_fn=_loss(), **SETTINGS),
     ValueError, (r"episodes.support_labels must be class ids in \[0, ways\); got negative "
                  r"values \[-3, -2, -1\]")),
    ("meta_loss without task axis",
     lambda p: meta.maml.meta_loss(p, ONE_TASK, loss_fn=_loss(), **SETTINGS),
     ValueError, (r"episodes.support_labels has shape \(6,\); expected \[tasks, support_size\]: "
                  r"a batch of episodes has a leading task axis on every leaf \(for one Episode "
                  r"use task_loss")),
    ("meta_grad without task axis",
     lambda p: meta.maml.meta_grad(p, ONE_TASK, loss_fn=_loss(), **SETTINGS),
     ValueError, r"episodes.support_labels has shape \(6,\); expected \[tasks, support_size\]"),
    ("meta_loss task counts differ",
     lambda p: meta.maml.meta_loss(p, TASKS._replace(query_inputs=jnp.ones((3, 6, 5))),
                              loss_fn=_loss(), **SETTINGS),
     ValueError, (r"episodes.query_inputs has shape \(3, 6, 5\); expected \[tasks, query_size, "
                  r"...\] = \[2, 6, ...\] \(axes 0 and 1 of episodes.query_labels\)")),
    ("task_loss given a task batch",
     lambda p: meta.maml.task_loss(p, TASKS, loss_fn=_loss(), **SETTINGS),
     ValueError, (r"episode.support_labels has shape \(2, 6\); expected \[examples\]: task_loss "
                  r"takes one Episode without a task axis")),
    ("params for other inputs", lambda p: _loss()(p, jnp.ones((6, 7)), Y),
     ValueError, (r"params do not fit inputs of shapes \(6, 7\) .*expected to generate shape "
                  r"\(7, 4\)")),
    ("infinite rate",
     lambda p: meta.adapt(p, X, Y, loss_fn=_loss(), inner_lr=float("inf"), num_steps=1),
     ValueError, r"inner_lr must be finite; got inf"),
    ("nan rate",
     lambda p: meta.make_step(meta.maml_learner(MODEL, inner_lr=np.nan, num_inner_steps=1), optax.sgd(0.1)),
     ValueError, r"inner_lr must be finite; got nan"),
    ("string rate",
     lambda p: meta.adapt(p, X, Y, loss_fn=_loss(), inner_lr="0.4", num_steps=1),
     TypeError, (r"inner_lr must be a number > 0 or a pytree of per-parameter rates shaped like "
                 r"params; got '0.4' \(str\)")),
    ("meta step string rate",
     lambda p: meta.make_step(meta.maml_learner(MODEL, inner_lr="0.4", num_inner_steps=1), optax.sgd(0.1)),
     TypeError, r"inner_lr must be a number > 0 .*; got '0.4' \(str\)"),
    ("negative per-parameter rate",
     lambda p: meta.adapt(p, X, Y, loss_fn=_loss(), inner_lr=_rates(-0.1), num_steps=1),
     ValueError, (r"inner_lr leaf \['params'\]\['encoder'\]\['Dense_0'\]\['bias'\] must hold "
                  r"finite rates > 0; got 1 that are not, e.g. \[-0.1\]")),
    ("nan per-parameter rates",
     lambda p: meta.adapt(p, X, Y, loss_fn=_loss(), num_steps=1,
                          inner_lr=jax.tree.map(lambda x: jnp.full(x.shape, jnp.nan), p)),
     ValueError, (r"inner_lr leaf \['params'\]\['encoder'\]\['Dense_0'\]\['bias'\] must hold "
                  r"finite rates > 0; got 4 that are not, e.g. \[nan, nan, nan, nan\]")),
    ("meta step per-parameter rate",
     lambda p: meta.make_step(meta.maml_learner(MODEL, inner_lr=_rates(0.0), num_inner_steps=1),
                              optax.sgd(0.1)),
     ValueError, (r"inner_lr leaf \['params'\]\['encoder'\]\['Dense_0'\]\['bias'\] must hold "
                  r"finite rates > 0; got 1 that are not, e.g. \[0.0\]")),
    ("metasgd initial rates",
     lambda p: meta.metasgd_learner(MODEL, inner_lr=_rates(-0.4)).init(KEY, X),
     ValueError, (r"inner_lr leaf \['params'\]\['encoder'\]\['Dense_0'\]\['bias'\] must hold "
                  r"finite rates > 0; got 1 that are not, e.g. \[-0.4\]")),
    ("string per-parameter rate",
     lambda p: meta.adapt(p, X, Y, loss_fn=_loss(), inner_lr=_rates("0.1"), num_steps=1),
     TypeError, (r"inner_lr leaf \['params'\]\['encoder'\]\['Dense_0'\]\['bias'\] must be a "
                 r"number or a numeric array; got '0.1' \(str\)")),
    ("learner name", lambda p: meta.make_learner("mamll", MODEL),
     ValueError, r"unknown algorithm 'mamll' \(did you mean 'maml'\?\)"),
    ("learner steps", lambda p: meta.maml_learner(MODEL, inner_lr=0.1, num_inner_steps=-1),
     ValueError, r"num_steps must be an int >= 0; got -1"),
    ("protonet distance", lambda p: meta.make_learner("protonet", MODEL, distance="cos"),
     ValueError, r"distance='cos' is not one of euclidean, cosine"),
    ("mesh devices", lambda p: meta.task_mesh([]),
     ValueError, r"devices must be a non-empty 1-D sequence of jax devices; got shape \(0,\)"),
    ("pmap batch", lambda p: meta.parallel.shard_for_pmap(jnp.zeros((5, 2)), 2),
     ValueError, r"meta batch size 5 is not divisible by the 2 devices"),
    # --- representation ---
    ("info_nce one pair",
     lambda p: representation.info_nce(jnp.ones((1, 3)), jnp.ones((1, 3)), jnp.zeros(())),
     ValueError, (r"a has shape \(1, 3\); info_nce needs a batch of >= 2 pairs \(each pair's "
                  r"negatives are the other rows")),
    ("info_nce no pair",
     lambda p: representation.info_nce(jnp.ones((0, 3)), jnp.ones((0, 3)), jnp.zeros(())),
     ValueError, r"a has shape \(0, 3\); info_nce needs a batch of >= 2 pairs"),
    ("info_nce one valid pair",
     lambda p: representation.info_nce(jnp.ones((3, 2)), jnp.ones((3, 2)), jnp.zeros(()),
                                       valid=jnp.array([0, 1, 0])),
     ValueError, r"valid marks 1 of 3 pairs as valid; info_nce needs >= 2 valid pairs"),
    # --- train ---
    ("evaluate one way",
     lambda p: train.evaluate_learner(meta.maml_learner(MODEL, inner_lr=0.1, num_inner_steps=1),
                                      p, CLASSES, KEY, ways=1, shots=1, queries=1,
                                      num_episodes=4),
     ValueError, (r"ways=1 must be an int >= 2 \(a 1-way episode is classified correctly by any "
                  r"model: accuracy 100% \+- 0\)")),
    ("config one way", lambda p: loop.validate_config(_config("ways=1")),
     ValueError, r"config.ways must be an int >= 2; got 1 \(a 1-way episode"),
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
     ValueError, (r"unknown config key 'optimizer.learning_rat'; did you mean "
                  r"'optimizer.learning_rate'\?")),
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
        (["train", "--set", "ways=1"], "config.ways must be an int >= 2; got 1"),
        (["evaluate", "--checkpoint", "/nonexistent"], "no config.json"),
    ],
)
def test_cli_errors_exit_2_with_the_message(tmp_path, capsys, argv, message):
    if argv[0] == "train":
        argv = argv + ["--workdir", str(tmp_path)]
    assert cli_main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_config_type_error_exits_2_with_one_line(tmp_path, capsys):
    argv = ["train", "--set", "num_steps='many'", "--workdir", str(tmp_path)]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err == "mmjax train: error: config key 'num_steps' expects int; got \"'many'\" (str)\n"


def test_cli_type_error_from_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    from mmjax.train import loop

    def buggy_train(*args, **kwargs):
        return len(3)  # a TypeError raised by code, not by the user's input

    monkeypatch.setattr(loop, "train", buggy_train)
    with pytest.raises(TypeError, match="has no len") as info:
        cli_main(["train", "--workdir", str(tmp_path)])
    assert info.traceback[-1].name == "buggy_train"


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
        ValueError,
        match=r"bad\.py: unknown config key 'maml\.inner_lrr'; did you mean 'maml\.inner_lr'\?",
    ):
        mmjax.get_config(str(bad))


# --- Behaviour where nothing can be raised (traced values), issue #14 ---


@pytest.mark.parametrize("shift", [7, -3])
def test_out_of_range_labels_under_jit_give_nan_not_a_finite_wrong_loss(params, shift):
    loss = jax.jit(_loss())
    assert np.isfinite(loss(params, X, Y)[0])
    assert np.isnan(loss(params, X, Y + shift)[0])


def test_traced_fusion_mask_counts_any_nonzero_as_present():
    layer = fusion.LateFusion(2)
    layer_params = layer.init(KEY, FEATURES, ONES)
    apply = jax.jit(layer.apply)  # one compilation for both masks
    mask = ONES.at[0, 1].set(0)  # sample 0 without modality 1
    soft = mask * jnp.array([[0.5, 2.0]])  # per-modality scales
    np.testing.assert_allclose(
        apply(layer_params, FEATURES, soft), apply(layer_params, FEATURES, mask)
    )


def test_metasgd_learned_rates_may_be_negative(params):
    """Only initial rates must be > 0: Meta-SGD learns the update direction too."""
    rates = jax.tree.map(lambda x: -0.1 * jnp.ones_like(x), params)
    loss, _ = meta.metasgd.learned_rates_task_loss(
        {"model": params, "inner_lr": rates}, ONE_TASK, loss_fn=_loss(), num_steps=0
    )
    assert np.isfinite(loss)


def _poisoned(episodes):
    return episodes._replace(support_inputs=episodes.support_inputs.at[0, 0, 0].set(jnp.nan))


def _builders():
    """(name, build(**kwargs) -> step(params, opt_state, episodes), leading device axis)."""
    devices = 2

    learner = meta.maml_learner(MODEL, inner_lr=0.1, num_inner_steps=1)

    def pmap(**kwargs):
        step = meta.make_step(learner, optax.sgd(0.1), pmap_axis_name="devices", **kwargs)

        def replicate(tree):
            return jax.tree.map(lambda x: jnp.stack([x] * devices), tree)

        shard = meta.parallel.shard_for_pmap
        return lambda p, o, e: step(replicate(p), replicate(o), shard(e, devices))

    def sharded(**kwargs):
        mesh = meta.task_mesh(jax.devices()[:devices])
        step = meta.make_step(learner, optax.sgd(0.1), mesh=mesh, **kwargs)
        place = meta.parallel.place_replicated
        return lambda p, o, e: step(
            place(p, mesh), place(o, mesh), meta.parallel.place_tasks(e, mesh)
        )

    def single(**kwargs):
        return meta.make_step(learner, optax.sgd(0.1), **kwargs)

    return [("jit", single, False), ("pmap", pmap, True), ("sharded", sharded, False)]


def _first_replica(tree, replicated):
    return jax.tree.map(lambda x: np.asarray(x)[0] if replicated else np.asarray(x), tree)


@pytest.mark.parametrize("name, build, replicated", _builders(), ids=[b[0] for b in _builders()])
def test_meta_steps_keep_the_last_good_params(params, name, build, replicated):
    """NaN in the images: skip_nonfinite returns the input params (donated or not); a finite
    batch still updates them; donate=False leaves the caller's arrays alive."""
    opt_state = optax.sgd(0.1).init(params)
    donate = name == "jit"  # jit: the guard with donation; pmap, sharded: without (one compile)
    step = build(skip_nonfinite=True, donate=donate)
    inputs = jax.tree.map(jnp.copy, params)
    kept, _, metrics = step(inputs, opt_state, _poisoned(TASKS))
    assert not np.asarray(metrics["finite"]).any()
    chex.assert_trees_all_equal(_first_replica(kept, replicated), params)
    if not donate:
        assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(inputs))
    updated, _, metrics = step(jax.tree.map(jnp.copy, params), opt_state, TASKS)
    assert np.asarray(metrics["finite"]).all()
    head = _first_replica(updated, replicated)["params"]["head"]["kernel"]
    assert np.all(np.isfinite(head)) and not np.array_equal(
        head, params["params"]["head"]["kernel"]
    )
