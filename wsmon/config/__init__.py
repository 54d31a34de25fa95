"""Settings: the model (settings.py), where values come from (loader.py), how they are described (schema.py).

The loader imports the model, never the reverse; this package imports only ``wsmon.core``.
"""

from wsmon.config.loader import load_settings
from wsmon.config.settings import ConfigError, Settings

__all__ = ["ConfigError", "Settings", "load_settings"]
