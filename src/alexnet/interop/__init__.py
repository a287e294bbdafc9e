"""Weights in and out of other tools: ``convert`` (torchvision), ``caffe`` (BVLC's reference CaffeNet/AlexNet)
and ``export`` (safetensors + config.json, ONNX, TorchScript, ``torch.export``)."""
