"""modelyard: many models behind one endpoint, from unmodified Triton model repositories.

Importing this package does no work and imports nothing heavy; see ``docs/architecture.md``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
