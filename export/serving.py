"""SavedModels built from the trained VAE's own methods.

`ServingModule` wraps `model.decode`, `model.sample`, `model.encode` / `encode_mean`
and `model.reconstruct` in `tf.function` signatures with named inputs and outputs, the
SavedModel that TF Serving runs. `DecoderModule` holds only the deterministic decoder
(`decode(z).mean()`); the TFLite and ONNX converters read it from a temporary
SavedModel. Nothing here re-implements a network: every signature calls the model.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf

from vae_tf.networks import edge_forms

SERVE_TAG = "serve"
DECODE = "decode"
SIGNATURE_NAMES = ("serving_default", "decode", "sample", "encode", "reconstruct")


def _label_spec(batch=None) -> tf.TensorSpec:
    return tf.TensorSpec([batch], tf.int32, name="label")


def _hold(module: tf.Module, model) -> None:
    """Gives `module` the model without making the Keras model a SavedModel child (its
    own Keras serialization is not needed and is slow); the variables the signatures
    capture are tracked as a plain list instead."""
    object.__setattr__(module, "model", model)
    module.model_variables = list(model.variables)


class DecoderModule(tf.Module):
    """The deterministic decoder z [batch, D] (+ label [batch]) -> image, the mean of p(x|z).

    Args:
        model: a trained `vae_tf.VAE`.
        batch_size: int or None. Static batch of the signature (None: any batch).
    """

    def __init__(self, model, batch_size: int | None = None):
        super().__init__(name="decoder")
        _hold(self, model)
        c = model.config
        z_spec = tf.TensorSpec([batch_size, c.latent_dim], tf.float32, name="z")
        if c.conditional:
            self.decode = tf.function(self._decode_conditional, input_signature=[z_spec, _label_spec(batch_size)])
        else:
            self.decode = tf.function(self._decode, input_signature=[z_spec])

    def _decode(self, z):
        return {"image": self.model.decode(z).mean()}

    def _decode_conditional(self, z, label):
        return {"image": self.model.decode(z, label).mean()}

    def signatures(self) -> dict:
        return {DECODE: self.decode.get_concrete_function()}


class ServingModule(tf.Module):
    """Every serving signature of a trained VAE.

    Signatures (a conditional model adds `label` int32 [batch] to each; `sample` takes
    `label` of shape [num_samples] or [1]):

    - `serving_default` and `decode`: `z` float32 [batch, D] -> `image` [batch, H, W, C],
      the mean of p(x|z);
    - `sample`: `num_samples` int32 scalar, `seed` int32 scalar -> `image`, the mean of
      p(x|z) at z ~ p(z) drawn with stateless random ops from (seed, 0);
    - `encode`: `image` float32 [batch, H, W, C] -> `z_mean` (the model's deterministic
      code, `encode_mean`) and `z_stddev` (the standard deviations of q(z|x); of its
      Gaussian head for an IAF posterior, whose flow has no closed form);
    - `reconstruct`: `image` -> `image`, the mean of p(x|z) at the deterministic code.

    Args:
        model: a trained `vae_tf.VAE`.
    """

    def __init__(self, model):
        super().__init__(name="vae_serving")
        _hold(self, model)
        c = model.config
        self.conditional = c.conditional
        z = tf.TensorSpec([None, c.latent_dim], tf.float32, name="z")
        image = tf.TensorSpec([None, *c.image_shape], tf.float32, name="image")
        num = tf.TensorSpec([], tf.int32, name="num_samples")
        seed = tf.TensorSpec([], tf.int32, name="seed")
        extra = [_label_spec()] if c.conditional else []
        self.decode = tf.function(self._decode, input_signature=[z, *extra])
        self.sample = tf.function(self._sample, input_signature=[num, seed, *extra])
        self.encode = tf.function(self._encode, input_signature=[image, *extra])
        self.reconstruct = tf.function(self._reconstruct, input_signature=[image, *extra])

    def _decode(self, z, label=None):
        return {"image": self.model.decode(z, label).mean()}

    def _sample(self, num_samples, seed, label=None):
        seed_pair = tf.stack([seed, tf.constant(0, tf.int32)])
        return {"image": self.model.sample(num_samples, seed=seed_pair, label=label, mean=True)}

    def _encode(self, image, label=None):
        q = self.model.encode(image, label)
        try:
            stddev = q.stddev()
        except NotImplementedError:
            stddev = q.distribution.stddev()  # IAF: the Gaussian head before the flow.
        return {"z_mean": self.model.encode_mean(image, label), "z_stddev": stddev}

    def _reconstruct(self, image, label=None):
        return {"image": self.model.reconstruct(image, label)}

    def signatures(self) -> dict:
        decode = self.decode.get_concrete_function()
        return {
            "serving_default": decode,
            "decode": decode,
            "sample": self.sample.get_concrete_function(),
            "encode": self.encode.get_concrete_function(),
            "reconstruct": self.reconstruct.get_concrete_function(),
        }


def save_serving(model, path: str) -> None:
    """Writes the TF Serving SavedModel of `model` to `path` (tag `serve`)."""
    module = ServingModule(model)
    tf.saved_model.save(module, path, signatures=module.signatures())


def save_decoder(model, path: str, batch_size: int | None = None, edge_form: bool = True) -> None:
    """Writes the decoder-only SavedModel (signature `decode`) that the converters read.

    With `edge_form` the decoder is traced in the form LiteRT's float kernels and ONNX
    Runtime run faster at batch 1 (`vae_tf.networks.edge_forms`: transposed
    convolutions as stride-1 phase convolutions, the last convolution's channel sum as
    a matmul; the same function).
    """
    module = DecoderModule(model, batch_size)
    with edge_forms(model.decoder_body) if edge_form else contextlib.nullcontext():
        tf.saved_model.save(module, path, signatures=module.signatures())
