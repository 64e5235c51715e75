"""Submissions: packing the zip and running it locally like the competition runtime.

The runtime's prediction checks live in :mod:`oncloudn.scoring.checks` (scoring refuses
folders that break them, and sits below this package).
"""
