"""stbias: static and dynamic information in video networks."""

__version__ = "0.1.0"
