"""Teachers: pretrained cloud models imported as model folders (``oncloudn teachers add``).

A teacher is a model folder like any other (``oncloudn.models.folder``): ``predict``,
``score``, ``flag-labels`` and ensembles use it unchanged; ``pack`` refuses the library-only
kinds teachers need (e.g. ``onnx``). See :mod:`oncloudn.teachers.catalog` for the teachers
that can be added and :mod:`oncloudn.teachers.describe` for ``teachers show``.
"""
