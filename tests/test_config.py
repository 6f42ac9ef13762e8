import dataclasses
from pathlib import Path

import pytest

from turbosr.config import ConfigError, ModelConfig, from_dict, load_config, model_config, to_dict
from turbosr.train import METHOD_NAMES, methods
from turbosr.train.teacher import TeacherConfig


def test_yaml_fills_defaults_and_overrides_win(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  preset: tiny\n  scale: 2\noptim:\n  learning_rate: 0.001\ndata:\n  crop_size: 64\n")
    config = load_config(TeacherConfig, path, ["optim.learning_rate=5e-5", "run.max_steps=7"])
    assert config.model.preset == "tiny"
    assert config.model.unet_channels == (16, 32)  # from the preset
    assert config.model.scale == 2
    assert config.optim.learning_rate == 5e-5
    assert config.run.max_steps == 7
    assert config.run.batch_size == TeacherConfig().run.batch_size


@pytest.mark.parametrize("override", ["optim.learnin_rate=1", "nonsense=3", "model.sched=1", "max_steps=3"])
def test_unknown_keys_are_errors(override):
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(TeacherConfig, None, [override])


@pytest.mark.parametrize(("override", "message"), [
    ("run.max_steps=1.5", "integer"),
    ("model.prediction_type=x", "prediction_type"),
    ("model.prediction_type=epsilon", "zero terminal SNR"),
    ("data.crop_size=100", "crop_size"),
    ("model.preset=huge", "preset"),
    ("data.degradation=blurry", "data.degradation must be one of"),  # caught at config time, not in make_lq
    ("data.split=heldout", "data.split"),
    ("run.mixed_precision=fp8", "mixed_precision"),
    ("optim.decay_steps=-1", "decay_steps"),
    ("terminal_fraction=2", "terminal_fraction"),
    ("data.realesrgan.strenght=1", "unknown config key"),
])
def test_bad_values_are_errors_at_config_time(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TeacherConfig, None, [override])


def test_missing_config_file_and_required_fields():
    with pytest.raises(ConfigError, match="not found"):
        load_config(TeacherConfig, "/nonexistent.yaml")
    decoder_config = methods()["decoder"][0]
    with pytest.raises(ConfigError, match="init_from"):
        load_config(decoder_config, None, [])


def test_round_trip_through_dict():
    config = load_config(TeacherConfig, None, ["model.preset=tiny", "data.crop_size=64",
                                               "data.realesrgan.strength=0.5"])
    assert config != load_config(TeacherConfig, None, [])
    assert from_dict(TeacherConfig, to_dict(config)) == config
    assert isinstance(config.model, ModelConfig) and config.data.realesrgan.strength == 0.5


def test_every_shipped_config_round_trips_through_dict():
    """What `turbosr train --dry-run` prints and a GPU bundle's run.yaml hold (to_dict) reads back as the same
    config with the same method; methods that start from a model folder included (they refuse model fields they
    do not read, so to_dict must not write them)."""
    for path in sorted((Path(__file__).parent.parent / "configs").rglob("*.yaml")):
        cls = methods()[config_method(path)][0]
        config = load_config(cls, path)
        assert from_dict(cls, to_dict(config)) == config, path


def test_presets_are_merged_in_one_place():
    """A YAML/--set model section and model_config() give the same ModelConfig for the same fields."""
    from_yaml = load_config(TeacherConfig, None, ["model.preset=tiny", "model.scale=2",
                                                  "model.schedule.zero_terminal_snr=false",
                                                  "model.prediction_type=epsilon", "data.crop_size=32"]).model
    direct = model_config("tiny", scale=2, schedule={"zero_terminal_snr": False}, prediction_type="epsilon")
    assert from_yaml == direct


def test_method_names_match_the_methods():
    assert tuple(methods()) == METHOD_NAMES


def config_method(path: Path) -> str:
    """The method a recipe names (its top-level ``method:``; every shipped config has one)."""
    from turbosr.config import recipe_method

    method = recipe_method(path)
    assert method in methods(), f"{path} names no known method ({method!r})"
    return method


def test_every_shipped_config_names_its_method_and_resolves():
    root = Path(__file__).parent.parent
    configs = sorted((root / "configs").rglob("*.yaml"))
    assert configs, "configs/ holds the documented run configs"
    for path in configs:
        method = config_method(path)
        load_config(methods()[method][0], path, method=method)
        assert "base" not in read_recipe_file(path), f"{path}: a recipe is whole; overlays live in experiments/"


def read_recipe_file(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text()) or {}


def test_every_experiment_arm_is_an_overlay_of_a_recipe_and_resolves():
    """experiments/ holds the arms as overlays: each names a recipe in configs/ as its base, changes something,
    and resolves under the method it names."""
    root = Path(__file__).parent.parent
    arms = sorted((root / "experiments").rglob("*.yaml"))
    assert arms
    for path in arms:
        raw = read_recipe_file(path)
        base = (path.parent / raw["base"]).resolve()
        assert base.parent == (root / "configs").resolve() and base.is_file(), f"{path}: base {raw['base']}"
        assert set(raw) - {"base", "method"}, f"{path} changes nothing"
        method = config_method(path)
        arm = to_dict(load_config(methods()[method][0], path, method=method))
        assert arm != to_dict(load_config(methods()[method][0], base, method=method)), path
    assert (root / "experiments" / "README.md").is_file()


def test_an_overlay_merges_into_its_base_key_by_key(tmp_path):
    from turbosr.train.teacher import TeacherConfig

    (tmp_path / "base.yaml").write_text("method: teacher\nmodel:\n  preset: tiny\n  scale: 2\n"
                                        "run:\n  max_steps: 10\n  batch_size: 3\n")
    (tmp_path / "arm").mkdir()
    (tmp_path / "arm" / "a.yaml").write_text("base: ../base.yaml\nrun:\n  max_steps: 20\n")
    config = load_config(TeacherConfig, tmp_path / "arm" / "a.yaml", method="teacher")
    assert config.run.max_steps == 20 and config.run.batch_size == 3 and config.model.scale == 2
    (tmp_path / "b.yaml").write_text("base: c.yaml\n")
    (tmp_path / "c.yaml").write_text("base: b.yaml\n")
    with pytest.raises(ConfigError, match="comes back"):
        load_config(TeacherConfig, tmp_path / "b.yaml")
    pinned = tmp_path / "pinned.yaml"
    pinned.write_text("method: teacher\ninit_from: runs/releases/x4-0123456789abcdef\n"
                      "run:\n  start_digests:\n    init_from: 0123456789abcdef\n")
    (tmp_path / "moved.yaml").write_text("base: pinned.yaml\ninit_from: runs/elsewhere\n")
    with pytest.raises(ConfigError, match="give run.start_digests or run.start_recipes here too"):
        load_config(TeacherConfig, tmp_path / "moved.yaml")
    (tmp_path / "moved.yaml").write_text("base: pinned.yaml\ninit_from: runs/elsewhere\nrun:\n  start_digests: {}\n")
    assert load_config(TeacherConfig, tmp_path / "moved.yaml").run.start_digests == {}
    (tmp_path / "kept.yaml").write_text("base: pinned.yaml\nrun:\n  max_steps: 5\n")
    assert load_config(TeacherConfig, tmp_path / "kept.yaml").run.start_digests == {"init_from": "0123456789abcdef"}
    (tmp_path / "d.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match="not found"):
        load_config(TeacherConfig, tmp_path / "d.yaml")


def test_a_recipe_run_under_another_method_is_refused(tmp_path, capsys):
    from turbosr.cli import main

    assert main(["train", "decoder", "--config", "configs/teacher-x4-small.yaml", "--dry-run"]) == 2
    assert "recipe for `turbosr train teacher`, not decoder" in capsys.readouterr().err
    (tmp_path / "no_method.yaml").write_text("run:\n  max_steps: 2\n")
    assert main(["train", "--config", str(tmp_path / "no_method.yaml"), "--dry-run"]) == 2
    assert "name the training method" in capsys.readouterr().err
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("method: teacher\nmodel:\n  preset: tiny\ndata:\n  crop_size: 64\n")
    assert main(["train", "--config", str(recipe), "--dry-run"]) == 0
    assert "preset: tiny" in capsys.readouterr().out


@pytest.mark.parametrize("method", ["decoder", "stablesr", "adversarial-distill"])
def test_methods_that_start_from_a_folder_refuse_model_fields_they_would_ignore(method):
    """Their network comes from the starting folder: a model field they do not read is an error, not a no-op."""
    cls = methods()[method][0]
    base = {"decoder": ["init_from=x"], "stablesr": ["prior=x"], "adversarial-distill": ["teacher=x"]}[method]
    for name in cls.MODEL_FIELDS_READ:
        assert name in {f.name for f in dataclasses.fields(ModelConfig)}
    load_config(cls, None, [*base, "model.scale=4"])  # read: fine
    with pytest.raises(ConfigError, match="model.unet_channels: not read by this method"):
        load_config(cls, None, [*base, "model.unet_channels=[8,16]"])
