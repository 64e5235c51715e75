"""oncloudn: cloud segmentation for the On Cloud N (Sentinel-2) challenge."""

__version__ = "0.1.0"
