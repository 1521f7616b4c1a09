"""Checks of exported artifacts against the live model: input validation with errors
that say what an artifact expects, the fixed reference batch, and the tolerance check.
"""

from __future__ import annotations

import numpy as np

from vae_tf.config import UserError

# Tolerances on max |artifact - TF decoder| over the reference batch (pixel means in
# [0, 1]). float32 formats must match the TF decoder. The reduced-precision ones were
# measured on the tiny MLP test models, a small conv net and the packaged MLP (largest:
# float16 3.8e-4, dynamic int8 2.1e-2, int8 6.2e-2, all on the packaged model; see
# README "Export") and leave a margin of about 2.5-5x.
TOLERANCES = {
    "saved_model": 1e-5,
    "decoder_float32.tflite": 1e-5,
    "decoder_float16.tflite": 2e-3,
    "decoder_dynamic_int8.tflite": 6e-2,
    "decoder_int8.tflite": 1.5e-1,
    "decoder.onnx": 1e-5,
}

REFERENCE_SEED = 20240601
REFERENCE_SIZE = 16
GOLDEN_SIZE = 4


class ExportError(UserError, RuntimeError):
    """An export failed or an exported artifact was misused; the message names the
    artifact and the problem."""


def reference_batch(latent_dim: int, conditional: bool, num_classes: int, size: int = REFERENCE_SIZE):
    """The fixed verification batch: z ~ N(0, I) from numpy's PCG64 seeded with
    REFERENCE_SEED [size, D] float32, and labels 0, 1, 2, ... (mod num_classes) or None."""
    z = np.random.default_rng(REFERENCE_SEED).standard_normal((size, latent_dim)).astype(np.float32)
    label = (np.arange(size) % num_classes).astype(np.int32) if conditional else None
    return z, label


def check_latents(artifact: str, z, label, *, latent_dim: int, conditional: bool, num_classes: int):
    """Validates decoder inputs for `artifact`; returns (z, label) as numpy arrays.

    Raises ExportError naming the artifact, what it expects and what it got."""
    expects = f"{artifact} expects z float32 [batch, {latent_dim}]"
    if conditional:
        expects += f" and label int32 [batch] in [0, {num_classes})"
    if not isinstance(z, np.ndarray):
        z = np.asarray(z)
    if z.dtype != np.float32:
        raise ExportError(f"{expects}; got z of dtype {z.dtype}. Cast with z.astype('float32').")
    if z.ndim != 2 or z.shape[1] != latent_dim:
        raise ExportError(f"{expects}; got z of shape {list(z.shape)}.")
    if not conditional:
        if label is not None:
            raise ExportError(f"{artifact} is not conditional: it takes no label, got one.")
        return z, None
    if label is None:
        raise ExportError(f"{expects}; got no label.")
    label = np.asarray(label)
    if not np.issubdtype(label.dtype, np.integer):
        raise ExportError(f"{expects}; got label of dtype {label.dtype}.")
    if label.ndim == 0:
        label = np.full([z.shape[0]], label)
    if label.shape != (z.shape[0],):
        raise ExportError(f"{expects}; got label of shape {list(label.shape)} for {z.shape[0]} latents.")
    if label.size and not (0 <= label.min() and label.max() < num_classes):
        raise ExportError(f"{expects}; got labels in [{label.min()}, {label.max()}].")
    return z, label.astype(np.int32)


def max_abs_diff(artifact: str, output, reference) -> float:
    output = np.asarray(output)
    if output.shape != reference.shape:
        raise ExportError(f"{artifact}: output shape {list(output.shape)} differs from the TF decoder's {list(reference.shape)}.")
    if not np.all(np.isfinite(output)):
        raise ExportError(f"{artifact}: output holds NaN or infinite values.")
    return float(np.max(np.abs(output.astype(np.float64) - reference.astype(np.float64))))


def check_tolerance(artifact: str, diff: float, tolerance: float) -> None:
    if not diff <= tolerance:
        raise ExportError(
            f"{artifact}: max |output - TF decoder| = {diff:.3g} on the reference batch exceeds its tolerance {tolerance:g}."
        )
