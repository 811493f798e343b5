"""modelyard's worker process for Python-backend models (one per model instance).

Runs in the model's own environment, so it depends on nothing but the standard library
and numpy, and is written for every CPython from 3.8 on.
"""
