"""The classifier: network, focal loss, data feeding, training, thresholds, model artefact.

Public: `artefact` (save and load a model), `preprocessing` (the one pre-processing step),
`training` and `split` (the recipe and its persisted split), `explain` (Grad-CAM heat maps),
`card` (the model card), `runtimes` (exports for OpenVINO and ONNX Runtime, fp32 and INT8, and the
runtime a model runs on), `quantize` (INT8 calibration), `agreement` (an export against Keras),
`acceleration` (GPU settings: precision, XLA, ONNX Runtime's providers),
`train_command`, `predict_command`, `explain_command`, `export_command`.
Inference goes through `worker.inference`.
"""

__all__ = [
    "acceleration",
    "agreement",
    "artefact",
    "card",
    "explain",
    "explain_command",
    "export_command",
    "predict_command",
    "preprocessing",
    "quantize",
    "runtimes",
    "split",
    "train_command",
    "training",
]
