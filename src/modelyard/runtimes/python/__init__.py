"""The Python backend: Triton ``model.py`` models, each instance in its own process."""

from modelyard.runtimes.python.factory import PythonFactory

__all__ = ["PythonFactory"]
