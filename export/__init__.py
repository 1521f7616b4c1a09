"""Export stage (installed as `vae_tf.export`): the trained VAE as a TF Serving
SavedModel, TFLite decoders (float32, float16, dynamic-range int8, full-integer int8)
and an ONNX decoder, each verified against the TF model, with a manifest.

    from vae_tf.export import export_run, load_exported, ExportError

`vae_tf` never imports this package; it builds on `vae_tf`'s public API and reuses the
model's own methods (no network is defined twice).
"""

from vae_tf.export.explorer import write_explorer
from vae_tf.export.pipeline import FORMATS, export_run
from vae_tf.export.runtime import ExportedModel, ONNXDecoder, TFLiteDecoder, load_exported
from vae_tf.export.validate import TOLERANCES, ExportError

__all__ = [
    "FORMATS",
    "TOLERANCES",
    "ExportError",
    "ExportedModel",
    "ONNXDecoder",
    "TFLiteDecoder",
    "export_run",
    "load_exported",
    "write_explorer",
]
