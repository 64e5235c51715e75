"""Export trained model folders to other backends: ONNX, OpenVINO IR (FP32 / FP16), int8 ONNX.

Each export writes a new model folder of a library kind (``onnx`` or ``openvino``) that runs
through the same prediction core (TTA, post-processing and chip rules unchanged); the
competition runtime cannot run these kinds, so ``pack`` refuses them.
"""
