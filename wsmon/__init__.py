"""wsmon: a terminal dashboard and monitoring engine for Daylily genomics worksets on AWS."""

__version__ = "0.1.0"
