"""Loaders of exported artifacts that check their inputs against the manifest before
calling the runtime, so a latent of the wrong size or dtype gives an error saying what
the artifact expects (not a runtime's stack trace).

    exported = load_exported("saved_models/mnist_vae")
    images = exported.sample(16, seed=0)              # SavedModel `sample` signature
    images = exported.decode(z)                        # SavedModel `serving_default`
    images = exported.tflite("int8").decode(z)         # LiteRT
    images = exported.onnx().decode(z)                 # ONNX Runtime
"""

from __future__ import annotations

import json
import os

import numpy as np

from vae_tf.export.validate import ExportError, check_latents

MANIFEST = "manifest.json"


class _Decoder:
    """Common input checks of one decoder artifact."""

    def __init__(self, name: str, manifest: dict):
        self.name = name
        self.latent_dim = int(manifest["latent_dim"])
        self.conditional = bool(manifest["conditional"])
        self.num_classes = int(manifest["num_classes"])

    def _inputs(self, z, label) -> dict:
        z, label = check_latents(
            self.name, z, label, latent_dim=self.latent_dim, conditional=self.conditional, num_classes=self.num_classes
        )
        return {"z": z} if label is None else {"z": z, "label": label}


class TFLiteDecoder(_Decoder):
    """A .tflite decoder run by the LiteRT interpreter through its `decode` signature.

    `batch_size` is the file's fixed batch (None: any batch); a decoder with a fixed
    batch decodes n latents in chunks of that size, the last one zero-padded."""

    def __init__(self, path: str, manifest: dict, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        super().__init__(os.path.basename(path), manifest)
        self.interpreter = Interpreter(model_path=path, num_threads=num_threads)
        self.runner = self.interpreter.get_signature_runner("decode")
        batch = int(self.runner.get_input_details()["z"]["shape_signature"][0])
        self.batch_size = None if batch < 0 else batch

    def decode(self, z, label=None) -> np.ndarray:
        """Images [n, H, W, C] (the mean of p(x|z)) for z float32 [n, D]."""
        inputs = self._inputs(z, label)
        b, n = self.batch_size, len(inputs["z"])
        if b is None or n == b:
            return np.array(self.runner(**inputs)["image"])
        chunks = []
        for start in range(0, max(n, 1), b):
            chunk = {k: v[start:start + b] for k, v in inputs.items()}
            short = b - len(chunk["z"])
            if short:
                chunk = {k: np.concatenate([v, np.zeros((short, *v.shape[1:]), v.dtype)]) for k, v in chunk.items()}
            chunks.append(np.array(self.runner(**chunk)["image"])[: b - short])
        return np.concatenate(chunks)


class ONNXDecoder(_Decoder):
    """decoder.onnx run by ONNX Runtime (CPU)."""

    def __init__(self, path: str, manifest: dict, num_threads: int | None = None):
        import onnxruntime as ort

        super().__init__(os.path.basename(path), manifest)
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def decode(self, z, label=None) -> np.ndarray:
        return self.session.run(["image"], self._inputs(z, label))[0]


class ExportedModel(_Decoder):
    """An exported model directory: its manifest, the newest SavedModel version (all
    signatures, run in TF 2) and accessors for the edge decoders."""

    def __init__(self, model_dir: str):
        self.model_dir = os.fspath(model_dir)
        path = os.path.join(self.model_dir, MANIFEST)
        if not os.path.exists(path):
            raise ExportError(
                f"{self.model_dir} is not an exported model: {MANIFEST} is missing; "
                f"create one with `vae-tf export RUN_DIR --out {self.model_dir}`."
            )
        with open(path) as f:
            self.manifest = json.load(f)
        super().__init__(f"{self.model_dir} (SavedModel)", self.manifest)
        self.saved_model_dir = os.path.join(self.model_dir, self.manifest["artifacts"]["saved_model"]["path"])
        self.image_shape = tuple(self.manifest["image_shape"])
        self._loaded = None

    def _signature(self, name: str):
        if self._loaded is None:
            import tensorflow as tf

            self._loaded = tf.saved_model.load(self.saved_model_dir, tags=["serve"])
        return self._loaded.signatures[name]

    def decode(self, z, label=None) -> np.ndarray:
        """`serving_default`: images [n, H, W, C] for z float32 [n, D]."""
        import tensorflow as tf

        inputs = {k: tf.constant(v) for k, v in self._inputs(z, label).items()}
        return self._signature("serving_default")(**inputs)["image"].numpy()

    def sample(self, num, seed: int = 0, label=None) -> np.ndarray:
        """`sample`: `num` images from the prior (mean of p(x|z)), reproducible by seed.

        For a conditional model `label` is an int or [num] ints; None cycles 0, 1, 2, ..."""
        import tensorflow as tf

        if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num <= 0:
            raise ExportError(f"{self.name} `sample` expects num_samples a positive int, got {num!r}.")
        inputs = {"num_samples": tf.constant(num, tf.int32), "seed": tf.constant(seed, tf.int32)}
        if self.conditional:
            if label is None:
                label = np.arange(num) % self.num_classes
            _, label = check_latents(
                self.name, np.zeros([num, self.latent_dim], np.float32), label,
                latent_dim=self.latent_dim, conditional=True, num_classes=self.num_classes,
            )
            inputs["label"] = tf.constant(label)
        elif label is not None:
            raise ExportError(f"{self.name} is not conditional: `sample` takes no label (no --digit), got {label!r}.")
        return self._signature("sample")(**inputs)["image"].numpy()

    def _images(self, image, label):
        image = np.asarray(image)
        if image.dtype != np.float32 or image.ndim != 4 or tuple(image.shape[1:]) != self.image_shape:
            raise ExportError(
                f"{self.name} expects image float32 [batch, {', '.join(map(str, self.image_shape))}]; "
                f"got {image.dtype} of shape {list(image.shape)}."
            )
        zeros = np.zeros([image.shape[0], self.latent_dim], np.float32)
        _, label = check_latents(self.name, zeros, label, latent_dim=self.latent_dim,
                                 conditional=self.conditional, num_classes=self.num_classes)
        import tensorflow as tf

        inputs = {"image": tf.constant(image)}
        if label is not None:
            inputs["label"] = tf.constant(label)
        return inputs

    def encode(self, image, label=None) -> tuple[np.ndarray, np.ndarray]:
        """`encode`: (z_mean, z_stddev), each [n, D]."""
        out = self._signature("encode")(**self._images(image, label))
        return out["z_mean"].numpy(), out["z_stddev"].numpy()

    def reconstruct(self, image, label=None) -> np.ndarray:
        return self._signature("reconstruct")(**self._images(image, label))["image"].numpy()

    def tflite(self, variant: str = "float32", num_threads: int | None = None) -> TFLiteDecoder:
        name = f"decoder_{variant}.tflite"
        if name not in self.manifest["artifacts"]:
            raise ExportError(f"{self.model_dir} has no {name}; variants: float32, float16, dynamic_int8, int8.")
        return TFLiteDecoder(os.path.join(self.model_dir, name), self.manifest, num_threads)

    def onnx(self, num_threads: int | None = None) -> ONNXDecoder:
        return ONNXDecoder(os.path.join(self.model_dir, "decoder.onnx"), self.manifest, num_threads)


def load_exported(model_dir: str) -> ExportedModel:
    """The exported model in `model_dir` (as written by `export_run`)."""
    return ExportedModel(model_dir)
