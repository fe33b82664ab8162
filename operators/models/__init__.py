"""Pretrained models: the sha256-pinned model store, a TF.js graph loader on torch, NanoDet-m,
EfficientNet-Lite0, COCO / ImageNet class names, device placement and NMS, and the CPU runtimes
(a cached ONNX export run on ONNX Runtime or OpenVINO, int8 quantization)."""
