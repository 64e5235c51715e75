"""Models: model folders (save/load, provenance) and the network registry used for training.

See :mod:`oncloudn.models.folder` for the folder format every tool speaks.
"""
