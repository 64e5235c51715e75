"""Knowledge distillation: a small student learns a teacher's cloud-vs-clear logits.

``teacher.py`` (the teacher's targets), ``cache.py`` (cached fp16 targets), ``objective.py``
(the KD objective), ``source.py`` (the run's chips from several roots), ``run.py``
(:func:`~oncloudn.training.distill.run.distill`, what ``oncloudn distill`` calls).
"""
