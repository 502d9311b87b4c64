"""Files: the .mzip container, ONNX export, Hugging Face adapters."""
