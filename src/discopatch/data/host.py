"""Where optional data installed on the host (Debian packages, fonts, npm modules) is looked up.

Every absolute host path the data loaders read goes through :func:`host_path`, so one environment variable,
``DISCOPATCH_SYSTEM_ROOT``, can re-root all of them: pointing it at an empty folder shows what a machine without
any optional package sees (the test suite runs that way once, to prove that nothing fails when a package is
missing), and pointing it at an unpacked copy of another system's ``/usr/share`` tree uses that copy.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable that re-roots every host data path (unset or ``/``: the real file system).
SYSTEM_ROOT_ENV_VAR = "DISCOPATCH_SYSTEM_ROOT"


def host_path(path: str | Path) -> Path:
    """``path`` under ``$DISCOPATCH_SYSTEM_ROOT`` when that is set; relative paths are returned unchanged."""
    p = Path(path)
    root = os.environ.get(SYSTEM_ROOT_ENV_VAR)
    if not root or root == "/" or not p.is_absolute():
        return p
    return Path(root) / p.relative_to(p.anchor)


__all__ = ["SYSTEM_ROOT_ENV_VAR", "host_path"]
