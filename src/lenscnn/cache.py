"""Where lenscnn keeps what it builds once and reads back: the built-in galaxy library, the domain
references of models."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$LENSCNN_CACHE``, else ``$XDG_CACHE_HOME/lenscnn``, else ``~/.cache/lenscnn``."""
    if os.environ.get("LENSCNN_CACHE"):
        return Path(os.environ["LENSCNN_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "lenscnn"
    return Path.home() / ".cache" / "lenscnn"
