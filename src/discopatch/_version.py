"""The package version: the one place it is written (``pyproject.toml`` reads it from here when building).

A leaf module, so that every module can read the version without importing the package's ``__init__.py``: that
file imports the detector on first use (in its module ``__getattr__``), so a module the detector reaches that
wrote ``from . import __version__`` would import its own package back, which ``tests/test_import_graph.py``
counts as an import cycle. Modules write ``from ._version import __version__`` instead.
"""

__version__ = "0.3.0"
