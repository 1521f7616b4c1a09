"""vae-tf: a variational autoencoder as a Keras model with TFP distribution layers.

Public API:

    from vae_tf import VAE, VAEConfig, TrainConfig, RunConfig, train, load, load_datasets

Layout: config -> data / distributions / networks -> model -> training -> evaluation
(`vae_tf.export`, installed from the top-level export/ folder, and the CLI sit on top).

Names are imported on first use (PEP 562), so `vae-tf --help` and `import vae_tf.config`
do not pay for importing TensorFlow.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "PRESETS": "vae_tf.config",
    "ConfigError": "vae_tf.config",
    "RunConfig": "vae_tf.config",
    "TrainConfig": "vae_tf.config",
    "UserError": "vae_tf.config",
    "VAEConfig": "vae_tf.config",
    "apply_preset": "vae_tf.config",
    "DataError": "vae_tf.data",
    "DataSpec": "vae_tf.data",
    "load_datasets": "vae_tf.data",
    "load_splits": "vae_tf.data",
    "VAE": "vae_tf.model",
    "TrainingError": "vae_tf.training",
    "choose_strategy": "vae_tf.training",
    "load": "vae_tf.training",
    "train": "vae_tf.training",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vae_tf' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
