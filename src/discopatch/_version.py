"""The package version, in a leaf module so that submodules can read it without importing the package.

``discopatch/__init__.py`` imports the detector eagerly, so a submodule on that path that imported
``from . import __version__`` would import its own package back (an import cycle, ``tests/test_import_graph.py``).
"""

__version__ = "0.1.0"
