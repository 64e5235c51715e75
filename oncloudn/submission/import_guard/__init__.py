"""The import guard run-local puts first on PYTHONPATH (its ``sitecustomize.py``)."""
