"""The config modules: names, the ``module:arg`` grammar, the defaults table, the pre-refactor
configs (``configs_sha256.json``: a digest of every shipped config before the configs became
parameterised modules) and the regression schema."""

import hashlib
import json
import pathlib
import pkgutil

import ml_collections
import pytest

import mmjax
from mmjax import configs
from mmjax.configs import defaults, fewshot_images, omniglot, parse_arg, regression
from mmjax.train import builders

REFERENCE = json.loads((pathlib.Path(__file__).parent / "configs_sha256.json").read_text())
REGRESSION = [name for name in REFERENCE if name.startswith("regression_")]


def _canonical(value):
    """JSON-able form that keeps tuples apart from lists (the digest's input)."""
    if isinstance(value, dict):
        return {key: _canonical(v) for key, v in value.items()}
    if isinstance(value, tuple):
        return {"__tuple__": [_canonical(v) for v in value]}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def _digest(config: ml_collections.ConfigDict) -> str:
    text = json.dumps(_canonical(config.to_dict()), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# Keys added after the digests were taken, with the values that leave every run as it was.
ADDED_SINCE = {
    ("model", "dtype"): "float32",
    ("model", "param_dtype"): "float32",
    ("mamlpp", "per_step_bn"): False,  # MAML++'s per-step batch norm, off
}


def _without_added(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``config`` less the ``ADDED_SINCE`` keys, each checked to hold its neutral value."""
    config = ml_collections.ConfigDict(config.to_dict())
    for (block, key), neutral in ADDED_SINCE.items():
        if block in config and key in config[block]:
            assert config[block][key] == neutral, (block, key)
            del config[block][key]
    return config


def test_every_pre_refactor_name_is_still_listed():
    assert sorted(REFERENCE) == configs.available_configs()
    assert len(REFERENCE) == 137


@pytest.mark.parametrize("name", sorted(set(REFERENCE) - set(REGRESSION)))
def test_each_config_equals_its_pre_refactor_self(name):
    config = configs.get_config(name)
    for block, key in ADDED_SINCE:  # every classifier has them, every MAML++ config its own
        if block == "model" and "encoder" in config.get("model", {}):
            assert config.model.encoder == "mlp" or key in config.model, (name, key)
        if block != "model" and config.get("algorithm") == block:
            assert key in config[block], (name, key)
    assert _digest(_without_added(config)) == REFERENCE[name]


@pytest.mark.parametrize("name", REGRESSION)
def test_regression_configs_flatten_to_their_pre_refactor_self(name):
    """The nested regression schema is what the regression trainer read before, regrouped."""
    config = configs.get_config(name)
    assert _digest(config) != REFERENCE[name]  # the schema did change...
    assert _digest(builders.regression_settings(config)) == REFERENCE[name]  # ...not the run


def test_a_few_configs_in_full():
    reptile = configs.get_config("omniglot_reptile_20w1s")  # 20-way sizes, Reptile's own batch
    assert (reptile.ways, reptile.queries, reptile.meta_batch_size) == (20, 5, 5)
    assert reptile.reptile.to_dict() == {
        "inner_lr": 1e-3,
        "num_inner_steps": 10,
        "eval_num_inner_steps": 50,
        "inner_optimizer": "adam",
        "adapt_on_query": True,
    }
    assert reptile.optimizer.to_dict() == {
        "name": "sgd",
        "learning_rate": 1.0,
        "grad_clip_norm": 0.0,
    }
    assert "maml" not in reptile and "modalities" not in reptile.data
    mmaml = configs.get_config("omniglot_mm_mmaml_20w1s")
    assert mmaml.mmaml.to_dict() == {
        "inner_lr": 0.1,
        "num_inner_steps": 5,
        "eval_num_inner_steps": 5,
        "first_order": False,
        "task_batching": "auto",
        "task_hidden_sizes": (64,),
    }
    assert (mmaml.model.encoder, mmaml.model.fusion, mmaml.data.modalities) == (
        "multimodal",
        "concat",
        ("image", "strokes"),
    )
    assert (mmaml.modality_dropout, mmaml.train_condition) == (0.0, "both")
    film = configs.get_config("omniglot_mm_film_5w1s")
    assert (film.algorithm, film.model.fusion, film.maml.inner_lr, film.meta_batch_size) == (
        "maml",
        "film",
        0.4,
        32,
    )
    assert configs.get_config("omniglot_fomaml_5w1s").maml.first_order
    assert configs.get_config("omniglot_metasgd_20w1s").metasgd.to_dict() == {
        "inner_lr": 0.1,
        "num_inner_steps": 1,
        "eval_num_inner_steps": 1,
        "first_order": False,
    }


def test_at_most_six_config_modules():
    modules = [m.name for m in pkgutil.iter_modules(configs.__path__)]
    assert len(modules) + 1 <= 6  # + __init__.py
    assert sorted(modules) == ["defaults", "fewshot_images", "omniglot", "quick", "regression"]


def test_the_fusion_names_are_the_fusion_registry():
    assert sorted(omniglot.FUSIONS) == sorted(mmjax.fusion.FUSION_METHODS)


def test_every_table_learner_is_a_registered_algorithm():
    learners = {entry["learner"] for entry in defaults.ALGORITHMS.values()} - {"multi_maml"}
    assert learners <= set(mmjax.meta.available_learners())


@pytest.mark.parametrize(
    "name, arg",
    [
        ("omniglot_maml_5w1s", "omniglot"),
        ("omniglot_maml_5w1s", "omniglot:algorithm=maml,ways=5,shots=1,modalities=image"),
        ("omniglot_anil_20w1s", "omniglot:ways=20,algorithm=anil"),
        ("omniglot_mm_anil_20w1s", "omniglot:algorithm=anil,ways=20,modalities=image+strokes,fusion=concat"),
        ("omniglot_mm_maml_5w1s", "omniglot:modalities=image+strokes"),
        ("omniglot_mm_low_rank_tensor_5w1s", "omniglot:modalities=image+strokes,fusion=low_rank_tensor"),
        ("omniglot_protonet_cosine_20w1s", "omniglot:algorithm=protonet_cosine,ways=20"),
        ("omniglot_reptile_5w1s", "omniglot:reptile"),  # a bare value is the first key's
        ("cub_anil_5w5s", "fewshot_images:dataset=cub,algorithm=anil,shots=5"),
        ("regression_3modes_5shot", "regression:num_modes=3"),
    ],
)  # fmt: skip
def test_the_module_arg_form_equals_the_short_name(name, arg):
    assert configs.get_config(arg).to_dict() == configs.get_config(name).to_dict()
    assert mmjax.get_config(arg).to_dict() == configs.get_config(name).to_dict()


def test_generated_configs_beyond_the_short_names():
    five_shot = configs.get_config("omniglot:algorithm=fomaml,ways=20,shots=5")
    assert (five_shot.ways, five_shot.shots, five_shot.maml.first_order) == (20, 5, True)
    assert five_shot.maml.inner_lr == 0.1
    maml = configs.get_config("regression:algorithm=maml,num_modes=2")
    assert "mmaml" not in maml and builders.regression_settings(maml).method == "maml"


def test_parse_arg_round_trip():
    spec = {"name": "a", "count": 3, "rate": 0.5, "flag": False}
    values = {"name": "b_c", "count": 20, "rate": 1e-3, "flag": True}
    parsed = parse_arg(configs.pack_arg(**values), **spec)
    assert parsed.to_dict() == values
    assert all(type(parsed[k]) is type(spec[k]) for k in spec)
    assert parse_arg(None, **spec).to_dict() == spec
    assert parse_arg("flag", **spec).flag is True  # a bare bool key is True
    assert parse_arg("flag=false,count=1", **spec).to_dict() == dict(spec, flag=False, count=1)


@pytest.mark.parametrize(
    "arg, message",
    [
        ("omniglot:algoritm=anil", r"omniglot: unknown key 'algoritm'; did you mean 'algorithm'\? Keys: algorithm, ways, shots, modalities, fusion"),
        ("omniglot:algorithm=anl", r"omniglot: algorithm='anl' is not one of \('maml', .*\); did you mean 'anil'\?"),
        ("omniglot:ways=7", r"omniglot: ways=7 is not one of \(5, 20\)"),
        ("omniglot:ways=five", r"omniglot: key 'ways' expects int; got 'five'"),
        ("omniglot:modalities=strokes", r"modalities='strokes' is not one of \('image', 'image\+strokes'\); did you mean 'image\+strokes'\?"),
        ("omniglot:modalities=image+strokes,fusion=concatt", r"fusion='concatt' is not one of .*; did you mean 'concat'\?"),
        ("omniglot:fusion=film", r"omniglot: fusion='film' needs modalities='image\+strokes'"),
        ("omniglot:ways=5,ways=20", r"omniglot: key 'ways' given twice"),
        ("omniglot:ways=5,anil", r"omniglot: expected key=value; got 'anil'"),
        ("omniglt:ways=5", r"unknown config module 'omniglt'; did you mean 'omniglot'\?"),
        ("fewshot_images:dataset=imagenet", r"fewshot_images: dataset='imagenet' is not one of"),
        ("regression:num_modes=4", r"regression: num_modes=4 is not one of \(2, 3, 5\)"),
        ("omniglot_mm_anil_5w2s", r"unknown config 'omniglot_mm_anil_5w2s'; did you mean 'omniglot_mm_anil_5w1s'\?"),
    ],
)  # fmt: skip
def test_a_bad_key_or_value_names_it_and_the_allowed_ones(arg, message):
    with pytest.raises(ValueError, match=message):
        configs.get_config(arg)


def test_the_cli_takes_the_module_arg_form(tmp_path, capsys):
    from mmjax.cli import main

    argv = ["train", "--config", "omniglot:algorithm=anil,ways=1", "--workdir", str(tmp_path)]
    assert main(argv) == 2
    assert "omniglot: ways=1 is not one of (5, 20)" in capsys.readouterr().err
    argv[2] = "omniglot:algorithm=anil"
    assert main(argv + ["--set", "ways=1"]) == 2  # parsed: the trainer's own check answers
    assert "config.ways must be an int >= 2; got 1" in capsys.readouterr().err


def test_builders_name_a_missing_required_key():
    config = configs.get_config("omniglot_mm_maml_5w1s")
    del config.model["fusion_num_heads"]
    with pytest.raises(ValueError, match=r"model.fusion_num_heads is required with model.encoder="):
        builders.build_model(config)
    config = configs.get_config("regression_2modes_5shot")
    del config["eval_tasks_per_mode"]
    with pytest.raises(ValueError, match=r"config.eval_tasks_per_mode is required"):
        builders.regression_settings(config)


def test_fewshot_images_protocols_come_from_the_table():
    assert fewshot_images.PROTOCOLS["reptile"] == defaults.ALGORITHMS["reptile"]["images_run"]
    assert regression.ALGORITHMS == ("maml", "mmaml", "multi_maml")
