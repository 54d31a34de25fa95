"""Settings: the model (settings.py), where values come from (loader.py), how they are described (schema.py)."""
