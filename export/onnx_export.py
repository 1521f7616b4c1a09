"""The ONNX decoder, converted by tf2onnx from the decoder-only SavedModel's `decode`
signature: input `z` float32 ["batch", D] (+ `label` int32 ["batch"]), output `image`
float32 ["batch", H, W, C], with the producer and the model config in metadata_props.
(Named onnx_export, not onnx, so it can never be mistaken for the onnx package.)
"""

from __future__ import annotations

import json

DEFAULT_OPSET = 17
FILENAME = "decoder.onnx"
BATCH_DIM = "batch"


def convert(decoder_dir: str, *, opset: int = DEFAULT_OPSET, metadata: dict | None = None):
    """An `onnx.ModelProto` of the decoder, checked with `onnx.checker` (full_check)."""
    import onnx
    import tensorflow as tf
    from tf2onnx import convert as tf2onnx_convert
    from tf2onnx import tf_loader

    # The same steps as `python -m tf2onnx.convert --saved-model DIR --signature_def decode`;
    # tensors_to_rename maps the graph's tensors to the signature's names (z, label, image).
    graph_def, inputs, outputs, tables, renames = tf_loader.from_saved_model(
        decoder_dir, None, None, tag="serve", signatures=["decode"],
        return_initialized_tables=True, return_tensors_to_rename=True,
    )
    with tf.device("/cpu:0"):
        model, _ = tf2onnx_convert._convert_common(
            graph_def, name="vae_decoder", opset=opset, input_names=inputs, output_names=outputs,
            initialized_tables=tables, tensors_to_rename=renames,
        )
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = BATCH_DIM
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def describe(path: str) -> dict:
    """Input and output names, shapes ("batch" symbolic) and dtypes, read back through
    onnxruntime, and the opset."""
    import onnx
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    dtype = {"tensor(float)": "float32", "tensor(int32)": "int32", "tensor(int64)": "int64"}

    def spec(values):
        return {v.name: {"shape": [s if isinstance(s, str) else int(s) for s in v.shape], "dtype": dtype.get(v.type, v.type)} for v in values}

    model = onnx.load(path, load_external_data=False)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return {"inputs": spec(session.get_inputs()), "outputs": spec(session.get_outputs()), "opset": int(opset)}
