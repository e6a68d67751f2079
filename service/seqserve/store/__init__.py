"""The model store on disk: `<store>/<name>/<version>/{model.onnx, signature.json}`."""
