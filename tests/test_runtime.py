"""oneDNN on or off (`TrainConfig.onednn`, `vae_tf.runtime`): what TensorFlow reads once,
at import. `vae-tf train` sets it before importing TensorFlow (the `mlp` preset runs off,
`--onednn`/`--no-onednn` choose, TF_ENABLE_ONEDNN_OPTS in the environment wins) and
records what the steps ran on in history.json; a Python caller whose setting came after
the import is warned."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest

from vae_tf.cli import _run_config_from_args, build_parser
from vae_tf.config import PRESETS, ConfigError, RunConfig, TrainConfig, apply_preset
from vae_tf.runtime import ONEDNN_ENV, check_onednn, onednn_enabled, set_onednn_before_import

from tests.test_quiet_cli import assert_quiet, run_cli


def test_config_field_round_trips_and_rejects_other_values():
    assert TrainConfig().onednn is None
    assert PRESETS["mlp"]["train"]["onednn"] is False and apply_preset("mlp").train.onednn is False
    rc = apply_preset("mlp")
    assert RunConfig.from_json(rc.to_json()).train.onednn is False
    for bad in ("no", 0, 1):
        with pytest.raises(ConfigError, match="onednn"):
            TrainConfig(onednn=bad)


@pytest.mark.parametrize("flags, expected", [
    ([], None), (["--preset", "mlp"], False), (["--preset", "mlp", "--onednn"], True), (["--no-onednn"], False),
])
def test_cli_flags_and_preset(flags, expected):
    args = build_parser().parse_args(["train", "--data", "bundled", "--out", "x", *flags])
    assert _run_config_from_args(args).train.onednn is expected


def test_building_the_cli_configuration_does_not_import_tensorflow():
    """The switch only works if nothing imported TensorFlow before `cmd_train` sets it."""
    code = ("import sys; from vae_tf.cli import build_parser, _run_config_from_args; "
            "a = build_parser().parse_args(['train', '--data', 'bundled', '--out', 'x', '--preset', 'mlp', "
            "'--conditional', '--latent-layers', '32,16']); _run_config_from_args(a); "
            "print(sorted(m for m in ('tensorflow', 'tf_keras', 'tensorflow_probability') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_set_before_import_leaves_a_users_setting_alone():
    env = {}
    assert not set_onednn_before_import(None, env) and env == {}
    assert set_onednn_before_import(False, env) and env == {ONEDNN_ENV: "0"}
    env = {ONEDNN_ENV: "1"}
    assert not set_onednn_before_import(False, env) and env == {ONEDNN_ENV: "1"}
    env = {}
    assert set_onednn_before_import(True, env) and env == {ONEDNN_ENV: "1"}


def test_a_setting_that_came_after_the_import_warns(monkeypatch):
    monkeypatch.delenv(ONEDNN_ENV, raising=False)
    enabled = onednn_enabled()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert check_onednn(None) is enabled and check_onednn(enabled) is enabled
    assert not caught
    with pytest.warns(UserWarning, match=f"onednn={not enabled} does not apply.*{ONEDNN_ENV}={int(not enabled)}"):
        assert check_onednn(not enabled) is enabled
    monkeypatch.setenv(ONEDNN_ENV, str(int(enabled)))  # the user chose: no warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_onednn(not enabled)
    assert not caught


def test_the_real_cli_runs_the_mlp_preset_without_onednn(tmp_path):
    """The preset's setting reaches TensorFlow (the test session's own TensorFlow runs
    oneDNN, so the child's state is its own; a user's variable winning is
    `test_set_before_import_leaves_a_users_setting_alone`)."""
    out = tmp_path / "run"
    proc = run_cli("train", "--data", "bundled", "--preset", "mlp", "--epochs", "1", "--out", str(out), "--no-pictures")
    assert_quiet(proc)
    history = json.loads((out / "history.json").read_text())
    assert history["onednn"] is False and history["jit_compile"] is False
