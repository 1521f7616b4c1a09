"""TFLite decoders converted from the decoder-only SavedModel (signature `decode`:
input `z` float32 [batch, D] (+ `label` int32 [batch]), output `image`).

Variants: float32; float16 weights; dynamic-range int8 (int8 weights, float
activations); full-integer int8 (int8 weights and activations, float input and output,
calibrated on latents drawn from the model's prior; a conditional model keeps the
label's ONE_HOT op in float, and a logistic-mixture model its output layer and
likelihood's mean, see `convert`); the int8 dense layers are quantized per tensor (see `convert`).

The batch dimension is open for MLP decoders (`get_signature_runner("decode")` runs any
batch size) and fixed at 1 for convolutional ones (`edge_batch_size`): LiteRT runs
TRANSPOSE_CONV on the XNNPACK delegate only when its output shape is a constant, which
an open batch dimension prevents (measured: conv-small float32 at batch 1 takes 0.42 ms
with an open batch, 0.25 ms fixed; int8 0.19 ms and 0.07 ms).
`vae_tf.export.runtime.TFLiteDecoder` decodes larger batches one chunk at a time.

The float variants are converted from the decoder traced in its edge form
(`vae_tf.networks.edge_forms`: transposed convolutions as stride-1 phase convolutions,
the last convolution's channel sum as a matmul; the same function), the int8 ones from
the plain decoder (`EDGE_FORM_VARIANTS`). Measured on conv-small at batch 1, one thread:
float32 0.195 -> 0.135 ms in the edge form;
dynamic-range int8 runs TRANSPOSE_CONV faster (65 vs 72 us), and the phase form's four
convolutions per layer, each with its per-channel scales, grow the int8 file 12%
(124 -> 139 KiB, past 30% of float32).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

VARIANTS = ("float32", "float16", "dynamic_int8", "int8")
EDGE_FORM_VARIANTS = ("float32", "float16")
CALIBRATION_BATCHES = 16
CALIBRATION_BATCH_SIZE = 16
CALIBRATION_SEED = 7
# Likelihoods whose head the full-integer variant computes in float: the decoder's
# output layer ("logits", and an MLP's reshape "logits_image") and the likelihood's
# mean (name scope "likelihood/"). The
# logistic mixture's mean divides by scales down to e^-7 and exponentiates, ranges one
# int8 scale cannot cover; and with the mean in float but the output layer in int8,
# the converter gave that layer's output the range of the logits and log-scales alone
# ([-4.7, 0] on a test model), clipping every location to 0 (images off by up to 0.93).
FLOAT_HEAD_LIKELIHOODS = ("logistic_mixture",)
HEAD_SCOPES = ("decoder_body/logits/", "decoder_body/logits_image/", "likelihood/")


def filename(variant: str) -> str:
    return f"decoder_{variant}.tflite"


def edge_batch_size(config) -> int | None:
    """The batch size the TFLite decoders are converted with: None (open) for an MLP
    decoder, 1 for a convolutional one (see the module docstring)."""
    return None if config.architecture == "mlp" else 1


def representative_latents(model, batch_size: int | None = None):
    """A generator factory of calibration inputs: z ~ p(z) (the model's own prior) with
    a fixed seed, and labels cycling over the classes for a conditional model; the same
    256 latents in batches of `batch_size` (None: 16)."""
    c = model.config
    batch = batch_size or CALIBRATION_BATCH_SIZE
    count = -(-CALIBRATION_BATCHES * CALIBRATION_BATCH_SIZE // batch) * batch
    labels = (np.arange(count) % c.num_classes).astype(np.int32) if c.conditional else None
    z = model.sample_prior(count, seed=(CALIBRATION_SEED, 0), label=labels).numpy()
    z = z.astype(np.float32).reshape(count // batch, batch, c.latent_dim)

    def generate():
        for i, latents in enumerate(z):
            inputs = {"z": latents}
            if c.conditional:
                inputs["label"] = labels[i * batch : (i + 1) * batch]
            yield inputs

    return generate


def _head_tensors(model: bytes) -> list[str]:
    """Names of the tensors of a TFLite model that the head computes (`HEAD_SCOPES`)."""
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_content=model).get_tensor_details()
    return [d["name"] for d in details if any(scope in d["name"] for scope in HEAD_SCOPES)]


def convert(decoder_dir: str, variant: str, representative=None, conditional: bool = False,
            float_head: bool = False) -> bytes:
    """The flatbuffer of one variant, converted from the decoder SavedModel.

    `float_head` (for `FLOAT_HEAD_LIKELIHOODS`) keeps the decoder's output layer and the
    likelihood's mean in float in the full-integer int8 variant (the rest stays int8).
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(decoder_dir, signature_keys=["decode"])
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "int8":
        if representative is None:
            raise ValueError("the full-integer int8 variant needs a representative dataset.")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.float32
        converter.inference_output_type = tf.float32
        # One scale per dense layer, not per output channel: a scale and a 64-bit zero
        # point per channel, for the weights and again for the int32 bias, outweigh the
        # int8 weights of a wide, shallow layer (conv-small's 16 -> 3136 dense: 137 KiB
        # per-channel, 63 KiB per-tensor). Measured: mean |diff| vs TF 0.0025 either way.
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True
        # The converter quantizes ONE_HOT (the label's one-hot) without rescaling its
        # on/off values to the output scale: the one-hot comes out as ~2.8 instead of
        # 1 and images are off by up to 0.6. Keep that one op in float (the rest is int8).
        if conditional or float_head:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
            options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=["ONE_HOT"] if conditional else None)
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=representative, debug_options=options
            )
            if float_head:  # named as in the calibrated model that the quantizer reads
                options.denylisted_nodes = _head_tensors(debugger.calibrated_model)
            return debugger.get_nondebug_quantized_model()
    elif variant != "float32":
        raise ValueError(f"unknown TFLite variant {variant!r}; choose one of {', '.join(VARIANTS)}.")
    return converter.convert()


def describe(path: str) -> dict:
    """Signature, input and output names, shapes (-1: resizable) and dtypes of a .tflite file."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    runner = interpreter.get_signature_runner("decode")
    inputs = {
        name: {"shape": [int(s) for s in d["shape_signature"]], "dtype": np.dtype(d["dtype"]).name}
        for name, d in runner.get_input_details().items()
    }
    outputs = {
        name: {"shape": [int(s) for s in d["shape_signature"]], "dtype": np.dtype(d["dtype"]).name}
        for name, d in runner.get_output_details().items()
    }
    return {"signature": "decode", "inputs": inputs, "outputs": outputs}
