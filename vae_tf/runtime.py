"""TensorFlow settings that only apply before TensorFlow is imported.

TensorFlow reads `TF_ENABLE_ONEDNN_OPTS` once, while its libraries load: oneDNN's CPU
kernels (fused matmuls and convolutions) or TensorFlow's own (Eigen). `vae-tf train`
calls `set_onednn_before_import` with the run's `TrainConfig.onednn` before anything
imports TensorFlow; `training.train` calls `check_onednn` to warn a Python caller whose
setting came too late. This module imports TensorFlow only inside `onednn_enabled`.
"""

from __future__ import annotations

import os
import warnings

ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"


def set_onednn_before_import(onednn: bool | None, environ=os.environ) -> bool:
    """Sets `TF_ENABLE_ONEDNN_OPTS` to "1"/"0" for `onednn` True/False, unless the
    environment already sets it (the user's choice wins) or `onednn` is None
    (TensorFlow's choice). Returns whether it set the variable. Call it before
    TensorFlow is imported; afterwards the variable changes nothing."""
    if onednn is None or environ.get(ONEDNN_ENV, "") != "":
        return False
    environ[ONEDNN_ENV] = "1" if onednn else "0"
    return True


def onednn_enabled() -> bool:
    """Whether the TensorFlow in this process runs oneDNN's CPU kernels."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def check_onednn(onednn: bool | None) -> bool:
    """This process's oneDNN state (`onednn_enabled`); warns (UserWarning) when a
    configuration asks for the other one and the environment did not choose (the
    variable unset: TensorFlow was imported before the setting could apply)."""
    enabled = onednn_enabled()
    if onednn is not None and onednn != enabled and os.environ.get(ONEDNN_ENV, "") == "":
        warnings.warn(
            f"TrainConfig.onednn={onednn} does not apply: TensorFlow was imported with oneDNN "
            f"{'on' if enabled else 'off'}; set {ONEDNN_ENV}={int(onednn)} before importing TensorFlow "
            "(`vae-tf train` does this itself).",
            UserWarning,
            stacklevel=3,
        )
    return enabled
