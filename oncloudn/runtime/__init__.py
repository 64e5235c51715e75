"""Runtime-safe core: everything ``submission/main.py`` needs inside ``submission.zip``.

Code in this package must run on the competition runtime (Python 3.9, torch 1.8, numpy 1.20,
scipy 1.7, rasterio 1.2, pillow, tifffile, segmentation-models-pytorch 0.2.1). It imports
nothing else from ``oncloudn`` and nothing the runtime lacks; ``tests/runtime`` enforces that.
The rest of the toolkit reuses these modules, so each piece has exactly one implementation.
"""
