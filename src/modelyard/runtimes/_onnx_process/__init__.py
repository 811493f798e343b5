"""The model a worker process runs for an ONNX model placed in its own process
(``parameters { key: "modelyard.placement" value: { string_value: "process" } }``).

``model.py`` sits alone in this folder because the worker puts a model's folder first on
``sys.path``, as Triton does: beside the runtimes it would shadow packages such as ``onnx``.
"""
