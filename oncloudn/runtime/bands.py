"""The On Cloud N chip format's constants (runtime-safe): one definition for the toolkit.

- ``BANDS``: the order of the four Sentinel-2 bands every chip folder holds, the default
  input of models and manifests, and the bands the classic threshold rule reads.
- ``REFLECTANCE_SCALE``: DN per unit of L2A surface reflectance (DN = reflectance x 10000).
- ``CHIP_SIZE``: the side of a competition chip and of every mask the runtime accepts.
- ``IGNORE_VALUE``: the label value that marks pixels without a label (left out of losses
  and, where asked, of scores).
"""

BANDS = ("B02", "B03", "B04", "B08")
REFLECTANCE_SCALE = 10000.0
CHIP_SIZE = 512
IGNORE_VALUE = 255
