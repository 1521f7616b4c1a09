"""vae-tf: a variational autoencoder as a Keras model with TFP distribution layers.

Public API:

    from vae_tf import VAE, VAEConfig, TrainConfig, RunConfig, train, load, load_datasets

Layout: config -> data / distributions / networks -> model -> training -> evaluation
(`vae_tf.export`, installed from the top-level export/ folder, and the CLI sit on top).
"""

from vae_tf.config import PRESETS, ConfigError, RunConfig, TrainConfig, VAEConfig, apply_preset
from vae_tf.data import DataError, DataSpec, load_datasets, load_splits
from vae_tf.model import VAE
from vae_tf.training import TrainingError, choose_strategy, load, train

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "VAE",
    "ConfigError",
    "DataError",
    "DataSpec",
    "RunConfig",
    "TrainConfig",
    "TrainingError",
    "VAEConfig",
    "apply_preset",
    "choose_strategy",
    "load",
    "load_datasets",
    "load_splits",
    "train",
]
