"""The file every model folder holds (a trial's kept model, an export, an ONNX export), named once.

Torch-free on purpose: an ONNX bundle is read where torch is not installed.
"""

BUNDLE_FILE = "bundle.json"  # what the folder is: format, kind, class names, image size, how to decode
