import pytest

from turbosr.config import ConfigError, ModelConfig, TrainConfig, load_config, to_dict


def test_yaml_fills_defaults_and_overrides_win(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  preset: tiny\n  scale: 2\noptim:\n  learning_rate: 0.001\ndata:\n  crop_size: 64\n")
    config = load_config(TrainConfig, path, ["optim.learning_rate=5e-5", "max_steps=7"])
    assert config.model.preset == "tiny"
    assert config.model.unet_channels == (16, 32)  # from the preset
    assert config.model.scale == 2
    assert config.optim.learning_rate == 5e-5
    assert config.max_steps == 7
    assert config.batch_size == TrainConfig().batch_size


@pytest.mark.parametrize("override", ["optim.learnin_rate=1", "nonsense=3", "model.sched=1"])
def test_unknown_keys_are_errors(override):
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(TrainConfig, None, [override])


def test_bad_values_are_errors():
    with pytest.raises(ConfigError, match="integer"):
        load_config(TrainConfig, None, ["max_steps=1.5"])
    with pytest.raises(ConfigError, match="prediction_type"):
        load_config(TrainConfig, None, ["model.prediction_type=x"])
    with pytest.raises(ConfigError, match="zero terminal SNR"):
        load_config(TrainConfig, None, ["model.prediction_type=epsilon"])
    with pytest.raises(ConfigError, match="crop_size"):
        load_config(TrainConfig, None, ["data.crop_size=100"])
    with pytest.raises(ConfigError, match="preset"):
        load_config(TrainConfig, None, ["model.preset=huge"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(TrainConfig, "/nonexistent.yaml")


def test_round_trip_through_dict():
    config = load_config(TrainConfig, None, ["model.preset=tiny", "data.crop_size=64"])
    again = load_config(TrainConfig, None, [])
    assert again != config
    from turbosr.config import from_dict

    assert from_dict(TrainConfig, to_dict(config)) == config
    assert isinstance(config.model, ModelConfig)


def test_every_shipped_config_resolves():
    from pathlib import Path

    configs = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
    assert configs, "configs/ holds the documented run configs"
    for path in configs:
        load_config(TrainConfig, path)
