"""dubbing: offline-first video translation and dubbing."""

__version__ = "0.1.0"
