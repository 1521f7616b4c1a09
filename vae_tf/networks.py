"""Encoder and decoder bodies: the deterministic networks between an image and the
distribution heads.

    encoder body: x [B, H, W, C] in [0, 1]  ->  features [B, F]
    decoder body: z [B, D] (concatenated with a one-hot label when conditional; for a
                  latent hierarchy [z_1, h_1], `decoder_input_dim`)
                  ->  likelihood parameters [B, H, W, P], float32: P = C logits, or
                      M (1 + 2C) for the discretized logistic mixture
                      (`distributions.likelihood_params_per_pixel`)

Three families, chosen by `VAEConfig.architecture`: "mlp", "conv" (stride-2
convolutions) and "resnet" (the same with residual blocks after each stage).
"""

from __future__ import annotations

import contextlib
import math

import tensorflow as tf
import tf_keras as keras

from vae_tf.config import VAEConfig
from vae_tf.distributions import likelihood_params_per_pixel

try:  # A private TF function, the one tf_keras also uses to tell XLA-compiled graphs apart.
    from tensorflow.python.ops.control_flow_util import GraphOrParentsInXlaContext as _in_xla_graph
except ImportError:  # pragma: no cover - a TensorFlow without it: always use the plain conv.
    def _in_xla_graph(graph):
        return True


@keras.utils.register_keras_serializable(package="vae_tf")
class ImageConv2D(keras.layers.Conv2D):
    """`Conv2D` for the few output channels of an image (1 for MNIST, 3 for RGB).

    Same weights (kernel [kh, kw, C_in, C_out]) and the same function as `Conv2D`;
    only the computation differs: outside XLA it runs as a depthwise convolution with
    C_out outputs per input channel, then a sum over the C_in input channels. oneDNN's
    direct convolution kernels are vectorized over output channels, so with C_out = 1
    they run at ~12 GFLOP/s on a 2-core AVX-512 CPU; the depthwise form runs the
    32 -> 1 channel 3x3 decoder conv of `conv-small` (forward and both gradients)
    4x faster (19.5 -> 5.0 ms per batch of 128). XLA compiles the depthwise form
    badly, so XLA-compiled graphs keep the plain convolution.

    Its edge form (inside `edge_forms(body)`, traced into the TFLite and ONNX
    decoders) also folds the bias into the depthwise convolution and sums the input
    channels as a matmul over channels-first rows: ONNX Runtime then runs the layer in
    20 instead of 29 us (conv-small, one thread), LiteRT in 15 instead of 14.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.edge_form = False

    def _depthwise_ok(self) -> bool:
        return (
            self.filters <= 4
            and self.data_format == "channels_last"
            and self.strides[0] == self.strides[1]
            and isinstance(self.padding, str)
        )

    def _depthwise(self, inputs, kernel):
        """[B, H', W', C_in * C_out]: channel c * C_out + f holds input channel c's share
        of output f."""
        return tf.nn.depthwise_conv2d(
            inputs, kernel, strides=[1, *self.strides, 1], padding=self.padding.upper(), dilations=self.dilation_rate
        )

    def call(self, inputs):
        if not (self.edge_form and self._depthwise_ok() and None not in inputs.shape[1:]):
            return super().call(inputs)
        c_in, filters = inputs.shape[-1], self.filters
        y = self._depthwise(inputs, self.kernel)
        if self.use_bias:
            y = tf.nn.bias_add(y, tf.tile(self.bias / c_in, [c_in]))
        h, w = y.shape[1:3]
        y = tf.reshape(tf.transpose(y, [0, 3, 1, 2]), [-1, c_in, filters * h * w])
        y = tf.matmul(tf.ones([1, 1, c_in], y.dtype), y)  # Sum over c (broadcast over the batch).
        y = tf.reshape(y, [-1, filters, h, w])
        y = tf.reshape(y, [-1, h, w, 1]) if filters == 1 else tf.transpose(y, [0, 2, 3, 1])
        return self.activation(y) if self.activation is not None else y

    def convolution_op(self, inputs, kernel):
        if not self._depthwise_ok() or _in_xla_graph(tf.compat.v1.get_default_graph()):
            return super().convolution_op(inputs, kernel)
        y = self._depthwise(inputs, kernel)
        if self.filters == 1:
            return tf.reduce_sum(y, axis=-1, keepdims=True)
        shape = tf.concat([tf.shape(y)[:-1], [inputs.shape[-1], self.filters]], axis=0)
        return tf.reduce_sum(tf.reshape(y, shape), axis=-2)


def _phase_taps(kernel_size: int, stride: int, phase: int) -> tuple[list[int], int]:
    """Kernel taps and top padding of output phase `phase` of a "same" transposed conv.

    TF's `conv2d_transpose` with "same" padding writes input pixel i through tap t to
    output pixel o = stride * i + t - pad, pad = (kernel_size - stride) // 2. Output
    pixel stride * m + phase therefore reads input pixel m - d through tap
    t = stride * d + phase + pad: a stride-1 convolution over the input. Returns its
    taps in the order of increasing input position (decreasing d) and how many rows
    above row 0 its window reaches (the padding that convolution needs at the top).
    """
    pad = max(kernel_size - stride, 0) // 2
    shifts = [d for d in range(-kernel_size, kernel_size + 1) if 0 <= stride * d + phase + pad < kernel_size]
    shifts.sort(reverse=True)
    return [stride * d + phase + pad for d in shifts], max(shifts[0], 0)


@keras.utils.register_keras_serializable(package="vae_tf")
class UpConv2D(keras.layers.Conv2DTranspose):
    """`Conv2DTranspose` ("same" padding) that can also run as stride-1 convolutions.

    Same weights (kernel [kh, kw, C_out, C_in]) and the same function as
    `Conv2DTranspose`. Inside `edge_forms(body)` it computes each of the
    stride x stride output phases as its own stride-1 convolution over the input (only
    the taps that reach that phase: 2x2, 2x1, 1x2 and 1x1 for a 3x3 kernel at stride
    2, the same multiply-adds as the transposed conv), with bias and activation, and
    interleaves the phases by concatenation and reshapes. Edge runtimes run that form
    faster at batch 1 (measured, conv-small's 14x14x64 -> 28x28x32 layer on one core:
    LiteRT 113 -> 74 us, ONNX Runtime 108 -> 90 us); TensorFlow runs the transposed
    conv faster (8.2 vs 9.2 ms for that layer at batch 128), so training and TF
    inference keep it.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.edge_form = False

    def _can_decompose(self, inputs) -> bool:
        return (
            self.data_format == "channels_last"
            and self.padding == "same"
            and tuple(self.dilation_rate) == (1, 1)
            and self.output_padding is None
            and None not in inputs.shape[1:]
            and all(s <= k for s, k in zip(self.strides, self.kernel_size))
        )

    def call(self, inputs):
        if not (self.edge_form and self._can_decompose(inputs)):
            return super().call(inputs)
        (sh, sw), (kh, kw) = self.strides, self.kernel_size
        h, w = inputs.shape[1:3]
        kernel = tf.transpose(self.kernel, [0, 1, 3, 2])  # -> [kh, kw, C_in, C_out]
        rows = []
        for a in range(sh):
            taps_h, top = _phase_taps(kh, sh, a)
            phases = []
            for b in range(sw):
                taps_w, left = _phase_taps(kw, sw, b)
                k = tf.gather(tf.gather(kernel, taps_h, axis=0), taps_w, axis=1)
                padding = [[0, 0], [top, len(taps_h) - 1 - top], [left, len(taps_w) - 1 - left], [0, 0]]
                y = tf.nn.conv2d(inputs, k, 1, padding)
                if self.use_bias:
                    y = tf.nn.bias_add(y, self.bias)
                phases.append(self.activation(y) if self.activation is not None else y)
            # [B, h, w, sw * C] -> [B, h, 1, w * sw, C]: columns interleaved.
            rows.append(tf.reshape(tf.concat(phases, -1), [-1, h, 1, w * sw, self.filters]))
        return tf.reshape(tf.concat(rows, 2), [-1, h * sh, w * sw, self.filters])


def edge_form_layers(body: keras.Model) -> list:
    """The layers of `body` that have an edge form (empty for an MLP decoder)."""
    return [layer for layer in body.layers if isinstance(layer, (UpConv2D, ImageConv2D))]


@contextlib.contextmanager
def edge_forms(body: keras.Model):
    """Within the block, the layers of `body` that have an edge form compute it (same
    function, the form LiteRT and ONNX Runtime run faster at batch 1): `UpConv2D` as
    phase convolutions, `ImageConv2D` with its channel sum as a matmul. The export
    traces its TFLite and ONNX decoders inside it."""
    layers = edge_form_layers(body)
    for layer in layers:
        layer.edge_form = True
    try:
        yield
    finally:
        for layer in layers:
            layer.edge_form = False


@keras.utils.register_keras_serializable(package="vae_tf")
class ResidualBlock(keras.layers.Layer):
    """Pre-activation residual block with a learned gain (ReZero, Bachlechner et al.,
    2020): x + g * conv(act(conv(act(x)))), shape-preserving, g a scalar that starts at 0.

    Each block starts as the identity. A zero-initialized last convolution would too,
    but Adam moves all its 3x3xCxC weights by ~lr at once, in step: at the default
    5e-3 learning rate the residual branch then amplifies its input ~3x per block and
    step, and the encoder's codes reached |mu| 29 by step 3 (loss 300 -> 3,700). A
    scalar gain moving by ~lr per step grows the branch gradually instead.

    Args:
        filters: int. Channels of the input and output.
        kernel_size: int. Convolution kernel size. Defaults to 3.
        activation: str. Activation name. Defaults to "swish".
    """

    def __init__(self, filters: int, kernel_size: int = 3, activation: str = "swish", **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.activation = activation
        self._act = keras.activations.get(activation)
        self.conv1 = keras.layers.Conv2D(filters, kernel_size, padding="same", dtype=self.dtype_policy)
        self.conv2 = keras.layers.Conv2D(filters, kernel_size, padding="same", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.gain = self.add_weight("gain", shape=(), initializer="zeros", dtype="float32")
        super().build(input_shape)

    def call(self, x):
        h = self.conv1(self._act(x))
        h = self.conv2(self._act(h))
        return x + tf.cast(self.gain, h.dtype) * h

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, activation=self.activation)
        return config


@keras.utils.register_keras_serializable(package="vae_tf")
class LabelledDense(keras.layers.Dense):
    """`Dense` whose input ends with a one-hot label [..., K] that it passes on: output
    [act(W x + b), x[..., -K:]] ([..., units + K]). A chain of them gives every layer
    of a conditional decoder the label (`VAEConfig.conditioning="every_layer"`), so
    that the decoder cannot learn to ignore it in favour of z.

    Args:
        units: outputs of the dense layer (before the label is appended).
        label_dim: K, the width of the label at the end of the input.
    """

    def __init__(self, units: int, label_dim: int, **kwargs):
        super().__init__(units, **kwargs)
        self.label_dim = int(label_dim)

    def call(self, inputs):
        return tf.concat([super().call(inputs), inputs[..., -self.label_dim:]], axis=-1)

    def compute_output_shape(self, input_shape):
        return super().compute_output_shape(input_shape)[:-1].concatenate([self.units + self.label_dim])

    def get_config(self):
        return {**super().get_config(), "label_dim": self.label_dim}


def build_encoder_body(config: VAEConfig) -> keras.Sequential:
    """Image [B, H, W, C] -> features [B, F] (F = last hidden width or flattened conv map)."""
    c = config
    layers = [keras.layers.InputLayer(input_shape=c.image_shape)]
    if c.architecture == "mlp":
        layers.append(keras.layers.Flatten())
        for units in c.hidden_units:
            layers.append(keras.layers.Dense(units, activation=c.activation))
            if c.dropout:
                layers.append(keras.layers.Dropout(c.dropout))
    else:
        for filters in c.conv_filters:
            layers.append(
                keras.layers.Conv2D(filters, c.kernel_size, strides=2, padding="same", activation=c.activation)
            )
            if c.architecture == "resnet":
                layers += [ResidualBlock(filters, c.kernel_size, c.activation) for _ in range(c.blocks_per_stage)]
        layers.append(keras.layers.Flatten())
        if c.dropout:
            layers.append(keras.layers.Dropout(c.dropout))
        if c.dense_units:
            layers.append(keras.layers.Dense(c.dense_units, activation=c.activation))
    return keras.Sequential(layers, name="encoder_body")


def feature_width(config: VAEConfig) -> int:
    """Width F of the encoder body's features for an MLP or a conv body with a dense
    layer; the bottom-up and top-down layers of a latent hierarchy use it too (256
    for a conv body without a dense layer)."""
    if config.architecture == "mlp":
        return config.hidden_units[-1]
    return config.dense_units or 256


def decoder_input_dim(config: VAEConfig) -> int:
    """Width of the decoder body's input: the latent (for a hierarchy, the bottom layer
    z_1 and its top-down features h_1) plus the one-hot label of a conditional model."""
    latent = config.latent_layers[0] + feature_width(config) if config.hierarchical else config.latent_dim
    return latent + (config.num_classes if config.conditional else 0)


def build_decoder_body(config: VAEConfig) -> keras.Sequential:
    """Latent (+ one-hot label) [B, D (+ K)] -> likelihood parameters [B, H, W, P] in
    float32, P = `likelihood_params_per_pixel(config)` (C logits for most likelihoods).

    The output layer (named "logits"; an MLP's is followed by its reshape,
    "logits_image") is kept in float32 so that the likelihood head sees float32
    parameters under a mixed-precision policy.
    """
    c = config
    h, w, _ = c.image_shape
    channels = likelihood_params_per_pixel(c)
    layers = [keras.layers.InputLayer(input_shape=(decoder_input_dim(c),))]

    def hidden_dense(units):
        if c.conditional and c.conditioning == "every_layer":
            return LabelledDense(units, c.num_classes, activation=c.activation)
        return keras.layers.Dense(units, activation=c.activation)

    if c.architecture == "mlp":
        for units in reversed(c.hidden_units):
            layers.append(hidden_dense(units))
        layers += [
            keras.layers.Dense(h * w * channels, dtype="float32", name="logits"),
            keras.layers.Reshape((h, w, channels), dtype="float32", name="logits_image"),
        ]
    else:
        stride = 2 ** len(c.conv_filters)
        h0, w0 = h // stride, w // stride
        filters = list(reversed(c.conv_filters))
        if c.dense_units:
            layers.append(hidden_dense(c.dense_units))
        layers += [
            keras.layers.Dense(h0 * w0 * filters[0], activation=c.activation),
            keras.layers.Reshape((h0, w0, filters[0])),
        ]
        for f in filters:
            layers.append(UpConv2D(f, c.kernel_size, strides=2, padding="same", activation=c.activation))
            if c.architecture == "resnet":
                layers += [ResidualBlock(f, c.kernel_size, c.activation) for _ in range(c.blocks_per_stage)]
        layers.append(ImageConv2D(channels, c.kernel_size, padding="same", dtype="float32", name="logits"))
    return keras.Sequential(layers, name="decoder_body")


def count_macs(body: keras.Sequential) -> int:
    """Multiply-accumulates of one forward pass of `body` for a single example.

    Counts Dense, Conv2D and Conv2DTranspose layers (inside residual blocks too) from
    their weight and output shapes; activations and additions are not counted.
    """
    total = 0

    def visit(layer):
        nonlocal total
        if isinstance(layer, keras.layers.Dense):
            total += int(layer.kernel.shape[0]) * int(layer.kernel.shape[1])
        elif isinstance(layer, keras.layers.Conv2DTranspose):
            kh, kw, out_c, in_c = layer.kernel.shape
            # Each input pixel scatters a kh x kw x out_c patch.
            in_h, in_w = layer.input_shape[1:3]
            total += in_h * in_w * kh * kw * in_c * out_c
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw, in_c, out_c = layer.kernel.shape
            out_h, out_w = layer.output_shape[1:3]
            total += out_h * out_w * kh * kw * in_c * out_c
        elif isinstance(layer, ResidualBlock):
            out_h, out_w = layer.output_shape[1:3]
            total += 2 * out_h * out_w * layer.kernel_size**2 * layer.filters**2

    for layer in body.layers:
        visit(layer)
    return int(total)


def flat_size(shape) -> int:
    return int(math.prod(shape))
