"""Configuration dataclasses: what the model is (`VAEConfig`) and how it is trained
(`TrainConfig`), each round-tripping through plain dicts and JSON.

A run directory stores both in `config.json` as
`{"format_version": 4, "model": {...}, "train": {...}}` (see `RunConfig`).
Presets are plain data: a name mapped to field overrides.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from typing import Any

from vae_tf import fileio

FORMAT_VERSION = 4
# What a config of an older format meant by the fields it leaves out: version 3 (before
# iwae_gradient; batch 128, 4 copies, k = 10 and 16 prior components by default) took the
# plain IWAE gradient; version 2
# (before augment_copies, when augment_shift defaulted to 0) also trained on each image
# once per pass, unmoved; version 1 (before test_fraction) also held out one slice, used
# as validation and test.
_VERSION_3_TRAIN_DEFAULTS = {"batch_size": 128, "augment_copies": 4}
_VERSION_2_TRAIN_DEFAULTS = {**_VERSION_3_TRAIN_DEFAULTS, "augment_shift": 0, "augment_copies": 1}
_OLD_TRAIN_DEFAULTS = {
    1: {**_VERSION_2_TRAIN_DEFAULTS, "test_fraction": 0.0}, 2: _VERSION_2_TRAIN_DEFAULTS, 3: _VERSION_3_TRAIN_DEFAULTS,
}
_OLD_MODEL_DEFAULTS = {
    version: {"iwae_gradient": "reparam", "iwae_samples": 10, "prior_components": 16} for version in (1, 2, 3)
}

ARCHITECTURES = ("mlp", "conv", "resnet")
# tf_keras 2.21's activations by name: checked without importing TensorFlow, so that
# `vae-tf train` can set what TensorFlow reads at import (`vae_tf.runtime`) after
# building its configuration.
TF_KERAS_ACTIVATIONS = frozenset((
    "elu", "exponential", "gelu", "hard_sigmoid", "linear", "mish", "relu", "selu", "sigmoid", "softmax",
    "softplus", "softsign", "swish", "tanh",
))
LIKELIHOODS = ("bernoulli", "gaussian", "continuous_bernoulli", "logistic_mixture")
POSTERIORS = ("diag", "full", "iaf")
PRIORS = ("normal", "mog", "vamp")
CONDITIONING = ("input", "every_layer")
IWAE_GRADIENTS = ("auto", "dreg", "reparam")
PREPROCESSING = ("dynamic", "static", "continuous")
LR_SCHEDULES = ("constant", "cosine")


class UserError(Exception):
    """Base of the errors caused by what a user passed in (a file, a flag, a value).

    The CLI prints their message without a traceback (unless --debug)."""


class ConfigError(UserError, ValueError):
    """A configuration value that cannot be used; the message names the field."""


class UsageError(UserError, ValueError):
    """An argument (a flag of the CLI, or of a library call it makes) that cannot be
    used; the message names it and what it must be."""


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not supported; choose one of {', '.join(choices)}.")


def _check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if not (value > 0 or (allow_zero and value == 0)):  # also false for NaN
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name}={value!r} must be {bound}.")


def _check_numbers(config) -> None:
    """Rejects NaN and infinities in every int and float field of a config dataclass
    (NaN passes any `<`/`>=` range check, inf any `> 0` check), and a value of a float
    field that is not a number, naming the field. New fields are covered by their
    annotation, with no check to add."""
    for f in dataclasses.fields(config):
        if f.type not in ("int", "float"):
            continue
        value = getattr(config, f.name)
        if f.type == "float" and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise ConfigError(f"{f.name}={value!r} must be a number, got {type(value).__name__}.")
        if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) and not math.isfinite(value):
            raise ConfigError(f"{f.name}={value!r} must be a finite number.")


def _int_tuple(name: str, values) -> tuple[int, ...]:
    """`values` as a tuple of ints; ConfigError naming `name` for NaN, inf or non-numbers."""
    try:
        return tuple(int(v) for v in values)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{name}={tuple(values)!r} must be integers.") from None


def checkpoint_cadence(every) -> tuple[int | None, float | None]:
    """(epochs, seconds) of a `TrainConfig.checkpoint_every` value: "N" (or the integer
    N >= 1) is every N epochs, "Ns" every N seconds (N >= 0; "0s" is every epoch).
    Raises ConfigError naming the field for anything else."""
    text = str(every).strip() if isinstance(every, (str, int)) and not isinstance(every, bool) else None
    try:
        if text is not None and text.endswith("s"):
            seconds = float(text[:-1])
            if math.isfinite(seconds) and seconds >= 0:
                return None, seconds
        elif text is not None and int(text) >= 1:
            return int(text), None
    except ValueError:
        pass
    raise ConfigError(
        f"checkpoint_every={every!r} must be a number of epochs (an integer >= 1, e.g. 5) "
        "or of seconds (e.g. 30s)."
    )


# JSON types accepted per field annotation (annotations are strings here).
_JSON_TYPES = {"int": (int,), "int | None": (int, type(None)), "float": (int, float), "bool": (bool,), "str": (str,), "str | None": (str, type(None)), "bool | None": (bool, type(None)), "str | int": (str, int)}


def _check_json_type(where: str, name: str, annotation: str, value: Any) -> None:
    """Raises ConfigError naming the field when a JSON value has the wrong type (a string
    "64" would otherwise become hidden_units (6, 4), and "8" a TypeError deep inside)."""
    if annotation.endswith(" | None") and value is None and annotation != "str | None":
        return
    if annotation.startswith("tuple[str"):
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        expected = "a list of strings"
    elif annotation.startswith("tuple["):
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        expected = "a list of integers"
    else:
        types = _JSON_TYPES[annotation]
        ok = isinstance(value, types) and (bool in types or not isinstance(value, bool))
        expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
    if not ok:
        raise ConfigError(f"{where} {name}={value!r} must be {expected}, got {type(value).__name__}.")


def _from_dict(cls, data: dict[str, Any], where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a JSON object, got {type(data).__name__}.")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown {where} key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(names))}."
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            value = data[f.name]
            _check_json_type(where, f.name, f.type, value)
            if isinstance(value, list):
                value = tuple(value)
            kwargs[f.name] = value
    return cls(**kwargs)


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Everything that defines a VAE's architecture and objective.

    Args:
        image_shape: (H, W, C) of the images, pixels in [0, 1]. Defaults to (28, 28, 1).
        latent_dim: size D of the latent z. Defaults to 32. With `latent_layers` it is
            set to their sum (the size of the hierarchy's code).
        latent_layers: sizes (d_1, ..., d_L) of L >= 2 stochastic layers, the bottom
            layer (next to x) first and the top last, e.g. (32, 16): a hierarchy with a
            top-down generative path and top-down inference (`vae_tf.hierarchy`).
            The model's latent code z is then (u_1, ..., u_L), D = sum(d_i) floats: u_i the
            standard-normal coordinates of layer i < L under its prior given the layers
            above, u_L the top layer itself (so the exported decoder needs no random
            op). Needs posterior="diag" and prior "normal" or "mog" (over the top
            layer). () (the default): one layer of `latent_dim`.
        architecture: encoder/decoder body: "mlp", "conv" (strided convolutions) or
            "resnet" (convolutions with residual blocks). Defaults to "mlp".
        hidden_units: widths of the MLP hidden layers (encoder order; the decoder
            mirrors them). Used by "mlp".
        conv_filters: filters of the stride-2 convolution stages (encoder order; the
            decoder mirrors them). Used by "conv" and "resnet".
        dense_units: width of the dense layer between the convolutions and the latent
            (0 for none). Used by "conv" and "resnet".
        kernel_size: convolution kernel size.
        blocks_per_stage: residual blocks after each stride-2 stage ("resnet").
        activation: hidden activation, any tf_keras activation name.
        dropout: dropout rate inside the encoder (regularizes small datasets).
        likelihood: p(x|z): "bernoulli" (binarized pixels), "gaussian"
            (N(f(z), gaussian_sigma^2 I)), "continuous_bernoulli" ([0, 1] pixels) or
            "logistic_mixture" (8-bit pixels k/255: a discretized mixture of logistics
            per pixel, its channels coupled through the component,
            `distributions.DiscretizedLogisticMixture`; needs
            preprocessing="continuous").
        gaussian_sigma: pixel standard deviation of the Gaussian likelihood.
        likelihood_components: mixture components M per pixel of "logistic_mixture"
            (the decoder then outputs M (1 + 2C) values per pixel). Defaults to 10.
        posterior: q(z|x): "diag" (IndependentNormal), "full" (MultivariateNormalTriL)
            or "iaf" (diagonal Gaussian followed by an inverse autoregressive flow).
        flow_layers: number of IAF steps ("iaf").
        flow_hidden_units: hidden width of each IAF step's MADE network.
        prior: p(z): "normal" (N(0, I)), "mog" (learned mixture of Gaussians) or
            "vamp" (VampPrior: mixture of posteriors at learned pseudo-inputs).
            Defaults to "mog" (with the IWAE objective: -1.7 nats held-out NLL, README
            "Results"). A conditional model's "mog" is one mixture per class, p(z|y),
            so that latents drawn for a label decode to that label.
        prior_components: mixture components of "mog" / pseudo-inputs of "vamp".
            Defaults to 64 (on the bundled digits 0.3-0.5 nats of validation IWAE NLL
            better than 16 in 30 epochs; docs/results/notes.md).
        conditional: condition encoder and decoder on the integer label. The default
            conditional model (`vae-tf train --conditional`,
            `VAEConfig.conditional_default()`) also takes `CONDITIONAL_DEFAULTS`.
        conditioning: where a conditional decoder reads the one-hot label: "input"
            (concatenated with z) or "every_layer" (also appended to the output of
            every dense layer, `networks.LabelledDense`; a convolutional decoder's
            convolutions do not read it).
        num_classes: number of labels of a conditional model.
        class_names: name of each label (label i is `class_names[i]`), from the data
            (a folder's class subfolders, a TFDS dataset's label names); None: numbers.
        beta: weight of the KL term (beta-VAE; 1 is the ELBO).
        kl_warmup_steps: the KL weight ramps linearly from 0 to `beta` over this many
            optimizer steps (0 disables warm-up). Defaults to 600 (README "Results").
        free_bits: minimum KL in nats per image that the loss charges (0 disables):
            reconstruction + max(KL, free_bits) for the ELBO; for the IWAE objective
            -IWAE_k + max(0, free_bits - KL), KL estimated from the bound's own k
            samples (`losses.free_bits_shortfall`; the same as the ELBO's at k = 1).
        iwae_samples: k latent samples per image in the training objective: 1 is the
            ELBO, k > 1 the importance-weighted bound (IWAE); each step decodes k
            latents per image. Defaults to 5: with `TrainConfig.augment_copies` 6 the
            decoder sees more views of the digits for less compute than 10 samples of
            4 copies, and scored 0.2-0.8 nats better (docs/results/notes.md).
        iwae_gradient: the encoder's gradient of the IWAE objective: "dreg" (doubly
            reparameterized, Tucker et al., 2019: the path through z only, each sample
            weighted by its squared normalized importance weight; unbiased, and its
            signal does not fade as k grows), "reparam" (the plain gradient of the
            bound, Burda et al., 2016) or "auto": "dreg" where it applies (k > 1, one
            latent layer, posterior "diag", prior "normal" or "mog"), else "reparam".
            The decoder's and prior's gradients are the same either way. Defaults to
            "auto" (on the bundled digits, validation IWAE NLL 0.2 nats and -ELBO 0.6
            nats better than "reparam" with two seeds, for 7% fewer images/s, the
            second backward pass through the encoder; docs/results/notes.md).
    """

    image_shape: tuple[int, int, int] = (28, 28, 1)
    latent_dim: int = 32
    latent_layers: tuple[int, ...] = ()
    architecture: str = "mlp"
    hidden_units: tuple[int, ...] = (400, 256)
    conv_filters: tuple[int, ...] = (32, 64)
    dense_units: int = 256
    kernel_size: int = 3
    blocks_per_stage: int = 1
    activation: str = "swish"
    dropout: float = 0.0
    likelihood: str = "bernoulli"
    gaussian_sigma: float = 0.1
    likelihood_components: int = 10
    posterior: str = "diag"
    flow_layers: int = 2
    flow_hidden_units: int = 128
    prior: str = "mog"
    prior_components: int = 64
    conditional: bool = False
    conditioning: str = "input"
    num_classes: int = 10
    class_names: tuple[str, ...] | None = None
    beta: float = 1.0
    kl_warmup_steps: int = 600
    free_bits: float = 0.0
    iwae_samples: int = 5
    iwae_gradient: str = "auto"

    def __post_init__(self):
        _check_numbers(self)
        for name in ("image_shape", "hidden_units", "conv_filters", "latent_layers"):
            object.__setattr__(self, name, _int_tuple(name, getattr(self, name)))
        if self.class_names is not None:
            names = tuple(self.class_names)
            if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
                raise ConfigError(f"class_names={names!r} must be distinct non-empty strings.")
            object.__setattr__(self, "class_names", names)
        if len(self.image_shape) != 3 or min(self.image_shape) <= 0:
            raise ConfigError(f"image_shape={self.image_shape!r} must be three positive sizes (H, W, C).")
        _check_positive("latent_dim", self.latent_dim)
        _check_choice("architecture", self.architecture, ARCHITECTURES)
        _check_choice("likelihood", self.likelihood, LIKELIHOODS)
        _check_choice("posterior", self.posterior, POSTERIORS)
        _check_choice("prior", self.prior, PRIORS)
        _check_choice("conditioning", self.conditioning, CONDITIONING)
        _check_choice("iwae_gradient", self.iwae_gradient, IWAE_GRADIENTS)
        if self.latent_layers:
            self._check_latent_layers()
        if self.architecture == "mlp":
            if not self.hidden_units:
                raise ConfigError("hidden_units must name at least one layer width for architecture='mlp'.")
            for u in self.hidden_units:
                _check_positive("hidden_units", u)
        else:
            if not self.conv_filters:
                raise ConfigError(f"conv_filters must name at least one stage for architecture={self.architecture!r}.")
            for f in self.conv_filters:
                _check_positive("conv_filters", f)
            stride = 2 ** len(self.conv_filters)
            h, w, _ = self.image_shape
            if h % stride or w % stride:
                raise ConfigError(
                    f"image_shape {self.image_shape} is not divisible by 2**len(conv_filters) = {stride}; "
                    f"use fewer conv_filters stages or architecture='mlp'."
                )
        _check_positive("dense_units", self.dense_units, allow_zero=True)
        _check_positive("kernel_size", self.kernel_size)
        _check_positive("blocks_per_stage", self.blocks_per_stage, allow_zero=True)
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout={self.dropout!r} must be in [0, 1).")
        _check_positive("gaussian_sigma", self.gaussian_sigma)
        _check_positive("likelihood_components", self.likelihood_components)
        _check_positive("flow_layers", self.flow_layers)
        _check_positive("flow_hidden_units", self.flow_hidden_units)
        _check_positive("prior_components", self.prior_components)
        _check_positive("num_classes", self.num_classes)
        _check_positive("beta", self.beta, allow_zero=True)
        _check_positive("kl_warmup_steps", self.kl_warmup_steps, allow_zero=True)
        _check_positive("free_bits", self.free_bits, allow_zero=True)
        _check_positive("iwae_samples", self.iwae_samples)
        if self.prior == "vamp" and self.conditional:
            raise ConfigError(
                "prior='vamp' places pseudo-inputs without labels and cannot be combined with "
                "conditional=True; use prior='mog' or 'normal' for a conditional model."
            )
        if self.iwae_gradient == "dreg" and self._dreg_unsupported():
            raise ConfigError(
                f"iwae_gradient='dreg' needs {self._dreg_unsupported()}; use iwae_gradient='auto' or 'reparam'."
            )
        if self.activation not in TF_KERAS_ACTIVATIONS:  # others: ask tf_keras (imports TensorFlow)
            try:
                import tf_keras

                tf_keras.activations.get(self.activation)
            except (ValueError, ImportError) as err:
                raise ConfigError(f"activation={self.activation!r} is not a tf_keras activation ({err}).") from None

    def _check_latent_layers(self) -> None:
        if len(self.latent_layers) < 2:
            raise ConfigError(
                f"latent_layers={self.latent_layers!r} must name at least two layer sizes (bottom first, e.g. "
                "(32, 16)); for one layer set latent_dim instead."
            )
        for d in self.latent_layers:
            _check_positive("latent_layers", d)
        if self.posterior != "diag":
            raise ConfigError(
                f"posterior={self.posterior!r} cannot be combined with latent_layers: each layer of a hierarchy "
                "has a diagonal Gaussian posterior; use posterior='diag'."
            )
        if self.prior == "vamp":
            raise ConfigError(
                "prior='vamp' cannot be combined with latent_layers; use prior='mog' or 'normal' (the prior of "
                "the top layer)."
            )
        object.__setattr__(self, "latent_dim", sum(self.latent_layers))

    def _dreg_unsupported(self) -> str:
        """What keeps the doubly reparameterized gradient from this model ("" if nothing)."""
        if self.iwae_samples < 2:
            return f"the IWAE objective (iwae_samples > 1, got {self.iwae_samples})"
        if self.latent_layers:
            return "one latent layer (not latent_layers)"
        if self.posterior != "diag":
            return f"posterior='diag' (got {self.posterior!r})"
        if self.prior == "vamp":
            return "prior 'normal' or 'mog' (the VampPrior is made by the encoder)"
        return ""

    @property
    def uses_dreg(self) -> bool:
        """True when training takes the doubly reparameterized gradient (`iwae_gradient`)."""
        return self.iwae_gradient != "reparam" and not self._dreg_unsupported()

    @property
    def hierarchical(self) -> bool:
        """True for a model with `latent_layers` (two or more stochastic layers)."""
        return bool(self.latent_layers)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VAEConfig":
        return _from_dict(cls, data, "model config")

    def replace(self, **changes) -> "VAEConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def conditional_default(cls, **changes) -> "VAEConfig":
        """The default conditional model, what `vae-tf train --conditional` trains:
        `conditional=True` with `CONDITIONAL_DEFAULTS` (two latent layers, KL weight 2)
        for the fields `changes` does not name."""
        return with_conditional_defaults(cls(conditional=True, **changes), set(changes))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How a VAE is trained.

    Args:
        data: dataset spec: "bundled", "tfds:NAME", "idx:DIR", "npz:FILE" or
            "images:DIR" (`data.DataSpec`).
        preprocessing: "dynamic" (fresh Bernoulli draw per use), "static"
            (binarized once with `seed`) or "continuous" ([0, 1] grey levels).
        epochs: passes over the training split.
        batch_size: global batch size (split across replicas). Defaults to 64: on the
            bundled digits twice the optimizer steps of 128 at the same compute bought
            1.2-2.0 nats of validation IWAE NLL in 30 epochs with the four copies (32:
            0.4 nats worse than 64; docs/results/notes.md).
        learning_rate: peak Adam learning rate.
        lr_schedule: "constant" or "cosine" (decay to 1% over all steps).
        weight_decay: decoupled weight decay (AdamW) per step; 0 for Adam.
        augment_shift: move every training image by a random whole number of pixels,
            up to this many in each direction (a fresh offset per image and pass; the
            border reflected in, `data.augment`); 0 trains on the images as they are.
            Evaluation images are never moved. On the bundled digits (validation IWAE
            NLL) 1 pixel bought 0.4-0.5 nats in 30 epochs without copies (two seeds)
            and 4 nats in 100 epochs of `--preset best`, which overfits without it; 2
            pixels cost 2.8 (docs/results/notes.md). Defaults to 1.
        augment_copies: how many times each training image appears in its batch, each
            copy with its own binarization draw and shift: a step trains on
            `batch_size` images in `batch_size * augment_copies` views ("batch
            augmentation", Hoffer et al., 2020). An epoch is still one pass over the
            training images, with the same number of optimizer steps, at
            `augment_copies` times the compute per step. 1 trains on each image once per
            pass. Copies need something that differs between them: "dynamic"
            preprocessing or `augment_shift` > 0. On the bundled digits 4 copies with the
            one-pixel shift bought 2.7 nats of validation IWAE NLL in 30 epochs, and 6
            copies with k = 5 (`VAEConfig.iwae_samples`) 0.2-0.8 more than 4 copies with
            k = 10 at less compute (docs/results/notes.md). Defaults to 6.
        validation_fraction: share of the source's images held out for validation
            where it has no validation split (0: no validation split, no validation
            metrics; `data.load_splits`).
        test_fraction: share held out for testing where the source has no test split
            (the bundled digits: 500 test digits, never used for a choice).
        split_seed: seed of the held-out split (kept apart from `seed` so that runs
            with different seeds evaluate on the same held-out digits).
        seed: seed of initialization, shuffling, binarization and latent sampling.
        mixed_precision: train in mixed precision: float16 on a GPU, bfloat16 on a
            CPU (`training.mixed_precision_policy`); heads stay float32.
        jit_compile: compile the train step with XLA: True, False, or None (auto:
            on a GPU only; on a CPU the compile does not pay for itself in a
            default-length run, `training.use_xla`).
        steps_per_execution: train steps per call into the compiled function.
        onednn: TensorFlow's oneDNN CPU kernels (the `TF_ENABLE_ONEDNN_OPTS`
            switch): None keeps TensorFlow's choice (on for x86 CPUs), False turns them
            off, True on. On the 2-core benchmark machine the MLP presets' steps ran
            as fast either way and convolutions 32% slower off (benchmarks/onednn.md).
            TensorFlow reads the switch once, when it is imported: `vae-tf train` sets
            it before importing TensorFlow (a `TF_ENABLE_ONEDNN_OPTS` already in the
            environment wins); a Python caller sets the variable before `import
            tensorflow`, and `train` warns when the setting could not apply
            (`runtime.check_onednn`).
        deterministic: enable TensorFlow op determinism (bit-identical reruns).
        checkpoint_every: how often `backup/` (what `--resume` restores) and
            `checkpoints/last` are written: "N" every N epochs, "Ns" at the end of the
            first epoch N seconds or more after the last checkpoint; always after the
            last epoch. Defaults to "30s": on the bundled digits a checkpoint costs a
            third to a half of the `mlp` preset's epoch of steps. Ctrl-C, SIGTERM, an
            exception or a NaN loss write the last completed epoch before training
            stops (`callbacks.RunCheckpoints`); a SIGKILL or power cut loses the epochs
            since the last checkpoint.
        data_dir: TFDS data directory.
        manual_dir: TFDS manual download directory.
        image_size: (height, width) to resize every image to (bilinear, antialiased),
            or None to keep the source's size (`data.ImageOptions`).
        channels: 1 (grey) or 3 (RGB), or None: grey when every image is grey.
        skip_bad_images: skip (and count) unreadable files of an `images:DIR` source
            instead of stopping at the first.
        cache: streamed sources (`images:DIR`, `tfds:NAME`): "memory" (decode once,
            keep uint8 pixels in RAM), "none" (decode every epoch: memory does not grow
            with the dataset), "file:PATH" (decoded pixels cached in files), or "auto"
            (memory when a split's pixels fit in 1 GiB, else none).
    """

    data: str = "bundled"
    preprocessing: str = "dynamic"
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 5e-3
    lr_schedule: str = "cosine"
    weight_decay: float = 0.0
    augment_shift: int = 1
    augment_copies: int = 6
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0
    seed: int = 0
    mixed_precision: bool = False
    jit_compile: bool | None = None
    steps_per_execution: int = 8
    onednn: bool | None = None
    deterministic: bool = False
    checkpoint_every: str | int = "30s"
    data_dir: str | None = None
    manual_dir: str | None = None
    image_size: tuple[int, ...] | None = None
    channels: int | None = None
    skip_bad_images: bool = False
    cache: str = "auto"

    def __post_init__(self):
        _check_numbers(self)
        _check_choice("preprocessing", self.preprocessing, PREPROCESSING)
        if self.image_size is not None:
            size = _int_tuple("image_size", self.image_size)
            if len(size) != 2 or min(size) <= 0:
                raise ConfigError(f"image_size={self.image_size!r} must be two positive integers (height, width).")
            object.__setattr__(self, "image_size", size)
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"channels={self.channels!r} must be 1 (grey) or 3 (RGB).")
        if not (self.cache in ("auto", "memory", "none") or (self.cache.startswith("file:") and len(self.cache) > 5)):
            raise ConfigError(f"cache={self.cache!r} must be auto, memory, none or file:PATH.")
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _check_positive("epochs", self.epochs)
        _check_positive("batch_size", self.batch_size)
        _check_positive("learning_rate", self.learning_rate)
        _check_positive("weight_decay", self.weight_decay, allow_zero=True)
        _check_positive("augment_shift", self.augment_shift, allow_zero=True)
        _check_positive("augment_copies", self.augment_copies)
        if self.augment_copies > 1 and self.preprocessing != "dynamic" and not self.augment_shift:
            raise ConfigError(
                f"augment_copies={self.augment_copies} with preprocessing={self.preprocessing!r} and no "
                "augment_shift would repeat every training image unchanged; use augment_copies=1 "
                "(--augment-copies 1), dynamic preprocessing, or an augment_shift (--augment-shift 1)."
            )
        _check_positive("steps_per_execution", self.steps_per_execution)
        if self.onednn is not None and not isinstance(self.onednn, bool):
            raise ConfigError(f"onednn={self.onednn!r} must be true, false or null (TensorFlow's choice).")
        epochs, seconds = checkpoint_cadence(self.checkpoint_every)
        object.__setattr__(self, "checkpoint_every", str(epochs) if epochs is not None else f"{seconds:g}s")
        for name in ("validation_fraction", "test_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be in [0, 1).")
        if self.validation_fraction + self.test_fraction >= 1:
            raise ConfigError(
                f"validation_fraction={self.validation_fraction!r} and test_fraction={self.test_fraction!r} "
                "leave no training images; their sum must be below 1."
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        return _from_dict(cls, data, "train config")

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def conditional_default(cls, **changes) -> "TrainConfig":
        """How `vae-tf train --conditional` trains: `CONDITIONAL_TRAIN_DEFAULTS` (the
        digits not moved) for the fields `changes` does not name, and one copy of each
        image where unmoved copies would be identical (continuous or static pixels);
        pair it with `VAEConfig.conditional_default()`."""
        return with_conditional_train_defaults(cls(**changes), VAEConfig(conditional=True), set(changes))


# Likelihoods of 8-bit pixels k/255, which binarized pixels would make meaningless.
_EIGHT_BIT_LIKELIHOODS = ("logistic_mixture",)


def check_compatible(model: VAEConfig, train: TrainConfig) -> None:
    """Raises ConfigError for a model and a training configuration that cannot be used
    together: a likelihood of 8-bit pixels ("logistic_mixture") on binarized data
    (preprocessing "dynamic" or "static")."""
    if model.likelihood in _EIGHT_BIT_LIKELIHOODS and train.preprocessing != "continuous":
        raise ConfigError(
            f"likelihood={model.likelihood!r} models 8-bit pixel values k/255 and cannot be trained on "
            f"preprocessing={train.preprocessing!r} (binarized 0/1 pixels); pass --preprocessing continuous "
            "(preprocessing='continuous')."
        )


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The model and training configuration of one run, as stored in `config.json`."""

    model: VAEConfig = dataclasses.field(default_factory=VAEConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def __post_init__(self):
        check_compatible(self.model, self.train)

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "model": self.model.to_dict(), "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        model, train = cls.parts_from_dict(data)
        return cls(model=model, train=train)

    @staticmethod
    def parts_from_dict(data: dict[str, Any]) -> tuple[VAEConfig, TrainConfig]:
        """The model and training configs of a run config's dict, each checked on its
        own but not yet against each other (`check_compatible`): for a partial config
        file whose other fields come from elsewhere (the CLI's flags)."""
        if not isinstance(data, dict):
            raise ConfigError("a run config must be a JSON object with 'model' and 'train'.")
        version = data.get("format_version", FORMAT_VERSION)
        if version in _OLD_TRAIN_DEFAULTS:
            # A run written by an earlier vae-tf: its missing fields mean what they meant
            # then (the split it trained on, no copies or shift), so a resume goes on alike.
            if isinstance(data.get("train", {}), dict):
                data = {**data, "train": {**_OLD_TRAIN_DEFAULTS[version], **data.get("train", {})}}
            if isinstance(data.get("model", {}), dict):
                data = {**data, "model": {**_OLD_MODEL_DEFAULTS[version], **data.get("model", {})}}
        elif version != FORMAT_VERSION:
            raise ConfigError(
                f"config format_version {version!r} is not supported by this vae-tf "
                f"(expects {FORMAT_VERSION}); retrain with this version or install the one that wrote it."
            )
        unknown = sorted(set(data) - {"format_version", "model", "train"})
        if unknown:
            raise ConfigError(f"unknown run config key(s) {', '.join(unknown)}; expected 'model' and 'train'.")
        return VAEConfig.from_dict(data.get("model", {})), TrainConfig.from_dict(data.get("train", {}))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"config is not valid JSON: {err}.") from None
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike) -> None:
        write_text_atomic(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RunConfig":
        """Reads a config file: a local path or a tf.io.gfile URL (gs://..., ram://...)."""
        return cls.from_dict(cls.read_file(path))

    @staticmethod
    def read_file(path: str | os.PathLike) -> dict[str, Any]:
        """The JSON object of a config file, unvalidated (`from_dict` checks it).

        Raises ConfigError naming the file when it is missing or unreadable, not UTF-8
        text, not JSON, or not a JSON object."""
        where = f"config file {os.fspath(path)!r}"
        if not fileio.exists(path):
            raise ConfigError(f"{where} does not exist.")
        try:
            with fileio.open_file(path, "rb") as f:
                raw = f.read()
        except OSError as err:
            raise ConfigError(f"{where} cannot be read: {err.strerror or err}.") from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise ConfigError(
                f"{where} is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); "
                "it must be a JSON object such as {\"model\": {...}, \"train\": {...}}."
            ) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{where} is not valid JSON: {err}.") from None
        if not isinstance(data, dict):
            raise ConfigError(
                f"{where} must be a JSON object with 'model' and 'train', got {type(data).__name__}."
            )
        return data


# Presets are field overrides on top of the defaults: {"model": {...}, "train": {...}}.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The default configuration, named.
    "default": {"model": {}, "train": {}},
    # pytorch/examples VAE: MLP 784-400-20, batch 128 (as the peer). Its steps take ~7 ms, so a whole
    # epoch of 32 runs as one call: with 8 per call, Keras' per-call work between them
    # cost ~20% of the epoch (benchmarks/epoch.md). Without oneDNN (`onednn`) its steps
    # run as fast and its runs started their first epoch sooner (benchmarks/epoch.md).
    # Like the peer, it trains on each image once per pass, unmoved.
    "mlp": {
        "model": {
            "architecture": "mlp", "hidden_units": (400,), "latent_dim": 20, "activation": "relu",
            "prior": "normal", "iwae_samples": 1, "kl_warmup_steps": 0,
        },
        "train": {
            "learning_rate": 3e-3, "lr_schedule": "constant", "steps_per_execution": 32, "onednn": False,
            "augment_shift": 0, "augment_copies": 1, "batch_size": 128,
        },
    },
    # keras.io VAE network (conv 32/64 stride 2, dense 16) with latent 16.
    "conv-small": {
        "model": {
            "architecture": "conv", "conv_filters": (32, 64), "dense_units": 16, "latent_dim": 16,
            "activation": "relu", "prior": "normal", "iwae_samples": 1, "kl_warmup_steps": 0,
        },
        # No XLA: on CPU, XLA's convolutions run 2.7x slower than oneDNN's (benchmarks/).
        "train": {
            "learning_rate": 3e-3, "lr_schedule": "constant", "jit_compile": False, "augment_shift": 0,
            "augment_copies": 1, "batch_size": 128,
        },
    },
    # The best combination found by benchmarks/ (README "Results"): the default objective
    # and prior on a wider MLP (512-256), every training digit moved by up to a pixel
    # each pass, 500 epochs (about 12 minutes on the 2-core CPU). Validation IWAE NLL
    # (grid and best stages): 95.20 nats for 100 epochs without the shift, 91.15 with
    # it, 89.80 for 200 epochs, 89.28 for 300 and 88.85 for 500 (test slice: 89.98; 89.91
    # rerun on 2026-12-08);
    # without the shift longer runs overfit. Each image once per pass, batch 128, the plain
    # IWAE gradient with k = 10 and 16 prior components (as measured).
    "best": {
        "model": {
            "hidden_units": (512, 256), "iwae_gradient": "reparam", "iwae_samples": 10, "prior_components": 16,
        },
        "train": {"epochs": 500, "augment_shift": 1, "augment_copies": 1, "batch_size": 128},
    },
}


# What a conditional model changes in the defaults, for the fields a user did not set:
# two latent layers and a KL weight of 2 (`vae-tf train --conditional`,
# `VAEConfig.conditional_default()`). Samples drawn for a label then show it far more
# often than with one layer and the ELBO's weight of 1 (benchmarks/conditional.md, one
# change at a time; the price is in -log p(x|y) there).
# It keeps the objective it was measured with: k = 10 and 16 mixture components per
# class (the unconditional default's 5 and 64 were chosen on NLL, not on agreement).
CONDITIONAL_DEFAULTS: dict[str, Any] = {
    "latent_layers": (32, 16), "beta": 2.0, "iwae_samples": 10, "prior_components": 16,
}
# ... and in the training defaults: the digits are not moved (`augment_shift` 0; the four
# copies stay). With the one-pixel shift the judge agreed with the requested label on
# 94.6% of samples (digits 5 and 8: 87% and 85%), without it on 97.4%, every digit 95% or
# more (benchmarks/conditional.md). Batches of 128 digits in 4 copies, as measured there
# (the unconditional default's 64 in 6 copies was chosen on NLL, not on agreement).
CONDITIONAL_TRAIN_DEFAULTS: dict[str, Any] = {"augment_shift": 0, "batch_size": 128, "augment_copies": 4}


def with_conditional_train_defaults(
    train: "TrainConfig", model: VAEConfig, explicit: set[str] | frozenset[str] = frozenset()
) -> "TrainConfig":
    """`train` with `CONDITIONAL_TRAIN_DEFAULTS` for the fields not named in `explicit`
    (those a preset, a config file or a flag set), if `model` is conditional; else `train`
    itself."""
    if not model.conditional:
        return train
    changes = {k: v for k, v in CONDITIONAL_TRAIN_DEFAULTS.items() if k not in explicit}
    shift = changes.get("augment_shift", train.augment_shift)
    if (train.preprocessing != "dynamic" and not shift and train.augment_copies > 1
            and "augment_copies" not in explicit):
        changes["augment_copies"] = 1  # unmoved copies of continuous or static pixels would be identical
    return train.replace(**changes)


def with_conditional_defaults(model: VAEConfig, explicit: set[str] | frozenset[str] = frozenset()) -> VAEConfig:
    """`model` with `CONDITIONAL_DEFAULTS` for the fields not named in `explicit` (those
    a preset, a config file or a flag set), if it is conditional; else `model` itself.

    The hierarchy is left out where the user chose the latent (`latent_dim` or
    `latent_layers` named) or a posterior or prior a hierarchy cannot take."""
    if not model.conditional:
        return model
    changes: dict[str, Any] = {}
    if (not explicit & {"latent_layers", "latent_dim"} and not model.latent_layers
            and model.posterior == "diag" and model.prior != "vamp"):
        changes["latent_layers"] = CONDITIONAL_DEFAULTS["latent_layers"]
    for name in ("beta", "iwae_samples", "prior_components"):
        if name not in explicit:
            changes[name] = CONDITIONAL_DEFAULTS[name]
    return model.replace(**changes)


def apply_preset(name: str, model: VAEConfig | None = None, train: TrainConfig | None = None) -> RunConfig:
    """Returns the defaults (or the given configs) with the preset's overrides applied."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    preset = PRESETS[name]
    model = (model or VAEConfig()).replace(**preset.get("model", {}))
    train = (train or TrainConfig()).replace(**preset.get("train", {}))
    return RunConfig(model=model, train=train)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes `text` to a temporary file beside `path`, then renames it into place
    (`path` may be a tf.io.gfile URL: see `vae_tf.fileio`)."""
    fileio.write_atomic(path, text)
