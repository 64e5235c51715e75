"""The band list of On Cloud N chips (runtime-safe): one definition for the whole toolkit.

``BANDS`` is the order of the four Sentinel-2 bands every chip folder holds, the default
input of models and manifests, and the bands the classic threshold rule reads.
"""

BANDS = ("B02", "B03", "B04", "B08")
