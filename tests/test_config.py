"""Configuration: dict/JSON round-trips, presets, and errors that name the field."""

from __future__ import annotations

import json

import pytest

from vae_tf import PRESETS, ConfigError, RunConfig, TrainConfig, VAEConfig, apply_preset

CUSTOM = RunConfig(
    model=VAEConfig(
        image_shape=(32, 32, 3), latent_dim=5, architecture="conv", conv_filters=(8, 16), dense_units=0,
        likelihood="gaussian", gaussian_sigma=0.2, posterior="iaf", flow_layers=3, prior="mog",
        prior_components=4, conditional=True, num_classes=7, beta=0.5, kl_warmup_steps=10, free_bits=0.1,
        iwae_samples=3, dropout=0.25, activation="relu",
    ),
    train=TrainConfig(
        data="npz:/tmp/x.npz", preprocessing="static", epochs=3, batch_size=32, learning_rate=1e-3,
        lr_schedule="constant", weight_decay=1e-4, validation_fraction=0.2, test_fraction=0.15, split_seed=4, seed=9,
        mixed_precision=True, jit_compile=False, steps_per_execution=2, deterministic=True, data_dir="/d",
        checkpoint_every="5",
    ),
)


def test_json_round_trip_keeps_every_field():
    text = CUSTOM.to_json()
    data = json.loads(text)
    assert data["format_version"] == 4
    assert data["model"]["conv_filters"] == [8, 16] and data["model"]["image_shape"] == [32, 32, 3]
    restored = RunConfig.from_json(text)
    assert restored == CUSTOM
    assert isinstance(restored.model.conv_filters, tuple) and isinstance(restored.model.image_shape, tuple)
    assert RunConfig.from_json(RunConfig().to_json()) == RunConfig()


def test_save_and_load_a_file(tmp_path):
    path = tmp_path / "config.json"
    CUSTOM.save(path)
    assert RunConfig.load(path) == CUSTOM
    assert not [p for p in tmp_path.iterdir() if p.name != "config.json"]  # no temp file left
    with pytest.raises(ConfigError, match="does not exist"):
        RunConfig.load(tmp_path / "missing.json")


def test_partial_dicts_take_the_defaults():
    config = RunConfig.from_dict({"model": {"latent_dim": 3}})
    assert config.model == VAEConfig(latent_dim=3) and config.train == TrainConfig()


@pytest.mark.parametrize(
    "data, field",
    [
        ({"model": {"latent_dims": 3}}, "latent_dims"),
        ({"train": {"epoch": 3}}, "epoch"),
        ({"model": {}, "trian": {}}, "trian"),
    ],
)
def test_unknown_keys_are_named(data, field):
    with pytest.raises(ConfigError, match=field):
        RunConfig.from_dict(data)


@pytest.mark.parametrize(
    "section, changes, field",
    [
        ("model", {"latent_dim": 0}, "latent_dim"),
        ("model", {"architecture": "transformer"}, "architecture"),
        ("model", {"likelihood": "poisson"}, "likelihood"),
        ("model", {"posterior": "flow"}, "posterior"),
        ("model", {"prior": "laplace"}, "prior"),
        ("model", {"dropout": 1.0}, "dropout"),
        ("model", {"activation": "no_such_activation"}, "activation"),
        ("model", {"hidden_units": []}, "hidden_units"),
        ("model", {"architecture": "conv", "conv_filters": [8, 8, 8]}, "image_shape"),
        ("model", {"image_shape": [28, 28]}, "image_shape"),
        ("model", {"prior": "vamp", "conditional": True}, "vamp"),
        ("model", {"beta": -1.0}, "beta"),
        ("model", {"iwae_samples": 0}, "iwae_samples"),
        # Wrong JSON types name the field too (not a TypeError, nor "64" read as (6, 4)).
        ("model", {"latent_dim": "8"}, "latent_dim"),
        ("model", {"hidden_units": "64"}, "hidden_units"),
        ("model", {"conditional": "yes"}, "conditional"),
        ("model", {"latent_dim": 8.5}, "latent_dim"),
        ("train", {"batch_size": 0}, "batch_size"),
        ("train", {"batch_size": "128"}, "batch_size"),
        ("train", {"epochs": True}, "epochs"),
        ("train", {"preprocessing": "grey"}, "preprocessing"),
        ("train", {"lr_schedule": "step"}, "lr_schedule"),
        ("train", {"learning_rate": 0}, "learning_rate"),
        ("train", {"validation_fraction": 1.0}, "validation_fraction"),
        ("train", {"data_dir": 3}, "data_dir"),
        ("train", {"checkpoint_every": 0}, "checkpoint_every"),
        ("train", {"checkpoint_every": "1.5"}, "checkpoint_every"),
        ("train", {"checkpoint_every": "-3s"}, "checkpoint_every"),
        ("train", {"checkpoint_every": "nans"}, "checkpoint_every"),
        ("train", {"checkpoint_every": "every epoch"}, "checkpoint_every"),
        ("train", {"checkpoint_every": True}, "checkpoint_every"),
        ("train", {"checkpoint_every": 2.5}, "checkpoint_every"),
    ],
)
def test_bad_values_raise_config_error_naming_the_field(section, changes, field):
    with pytest.raises(ConfigError, match=field):
        RunConfig.from_json(json.dumps({section: changes}))


def test_valid_json_types_are_accepted():
    config = RunConfig.from_dict({"model": {"beta": 1, "hidden_units": [16, 8]}, "train": {"data_dir": None}})
    assert config.model.beta == 1 and config.model.hidden_units == (16, 8)


@pytest.mark.parametrize("given, stored", [("30s", "30s"), ("2.50s", "2.5s"), ("0s", "0s"), ("5", "5"), (5, "5"), (" 3 ", "3")])
def test_checkpoint_every_takes_epochs_or_seconds(given, stored):
    """`checkpoint_every`: N epochs (a string or, in JSON and Python, an integer) or N
    seconds ("Ns"), stored in one spelling; the default is 30 seconds."""
    assert TrainConfig().checkpoint_every == "30s"
    assert TrainConfig(checkpoint_every=given).checkpoint_every == stored
    config = RunConfig.from_dict({"train": {"checkpoint_every": given}})
    assert config.train.checkpoint_every == stored and RunConfig.from_json(config.to_json()) == config


def test_malformed_json_and_versions():
    with pytest.raises(ConfigError, match="not valid JSON"):
        RunConfig.from_json("{model: }")
    with pytest.raises(ConfigError, match="format_version 5"):
        RunConfig.from_json(json.dumps({"format_version": 5}))


def test_version_1_configs_keep_their_split():
    """A run written before the test slice existed (format_version 1) held out one
    slice for validation and test: loading it keeps test_fraction 0, so such a run is
    never evaluated on images it trained on; version 2 files get the default 0.1."""
    old = RunConfig.from_json(json.dumps({"format_version": 1, "train": {"validation_fraction": 0.1}}))
    assert old.train.test_fraction == 0.0 and old.train.validation_fraction == 0.1
    assert RunConfig.from_json(json.dumps({"format_version": 2})).train.test_fraction == 0.1
    assert RunConfig.from_json(old.to_json()).train.test_fraction == 0.0  # saved as version 3, kept


def test_version_2_configs_train_without_copies_or_shift():
    """Before augment_copies (format_version 2) a run trained on each image once per pass
    and augment_shift defaulted to 0: an old run resumes as it started, while a file of
    this version (or none) takes today's defaults for what it leaves out."""
    for version in (1, 2):
        old = RunConfig.from_json(json.dumps({"format_version": version, "train": {"epochs": 3}}))
        assert (old.train.augment_copies, old.train.augment_shift) == (1, 0)
        assert RunConfig.from_json(old.to_json()).train == old.train  # saved as version 4, kept
    kept = RunConfig.from_json(json.dumps({"format_version": 2, "train": {"augment_shift": 2}}))
    assert (kept.train.augment_copies, kept.train.augment_shift) == (1, 2)
    assert RunConfig.from_json(json.dumps({"format_version": 3})).train.augment_copies == 4  # version 3's default
    for data in ({"format_version": 4}, {}):
        assert RunConfig.from_json(json.dumps(data)).train.augment_copies == TrainConfig().augment_copies == 6


def test_version_3_configs_keep_batch_128_and_the_plain_iwae_gradient():
    """Before iwae_gradient (format_version 3) the batch defaulted to 128 and the IWAE
    gradient was the plain one: an old run resumes as it started (saved as version 4,
    kept), a version-4 file (or none) takes today's defaults."""
    for version in (1, 2, 3):
        old = RunConfig.from_json(json.dumps({"format_version": version}))
        assert (old.train.batch_size, old.model.iwae_gradient, old.model.uses_dreg) == (128, "reparam", False)
        assert (old.model.iwae_samples, old.model.prior_components) == (10, 16)
        assert old.train.augment_copies == (4 if version == 3 else 1)
        again = RunConfig.from_json(old.to_json())
        assert again == old and json.loads(old.to_json())["format_version"] == 4
    kept = RunConfig.from_json(json.dumps({"format_version": 3, "model": {"iwae_gradient": "dreg"},
                                           "train": {"batch_size": 32}}))
    assert (kept.train.batch_size, kept.model.iwae_gradient) == (32, "dreg")
    for data in ({"format_version": 4}, {}):
        new = RunConfig.from_json(json.dumps(data))
        assert (new.train.batch_size, new.model.iwae_gradient) == (TrainConfig().batch_size, VAEConfig().iwae_gradient)
    with pytest.raises(ConfigError, match="JSON object"):
        RunConfig.from_json("[1, 2]")
    with pytest.raises(ConfigError, match="model config must be a JSON object"):
        RunConfig.from_dict({"model": [1]})


def test_presets_are_overrides_on_the_defaults():
    assert set(PRESETS) >= {"default", "mlp", "conv-small", "best"}
    assert apply_preset("default") == RunConfig()
    mlp = apply_preset("mlp")
    assert mlp.model.hidden_units == (400,) and mlp.model.latent_dim == 20 and mlp.train.lr_schedule == "constant"
    assert mlp.train.batch_size == 128  # the peer's
    conv = apply_preset("conv-small", train=TrainConfig(epochs=2))
    assert conv.model.architecture == "conv" and conv.train.epochs == 2
    for name in PRESETS:  # every preset is a valid configuration that survives JSON
        config = apply_preset(name)
        assert RunConfig.from_json(config.to_json()) == config
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        apply_preset("nope")


def test_configs_are_immutable_and_replace_validates():
    config = VAEConfig()
    with pytest.raises(Exception):
        config.latent_dim = 3  # frozen dataclass
    with pytest.raises(ConfigError, match="latent_dim"):
        config.replace(latent_dim=-1)
    assert config.replace(latent_dim=3).latent_dim == 3 and config == VAEConfig()
