"""``oncloudn download``: the released On Cloud N data over HTTPS into a dataset root.

sources.py (known hosts and their URL layout), selection.py (which chips and files, from the
metadata CSV; disk estimate), transfer.py (one file: HTTP Range resume, retries, length and
MD5 checks), integrity.py (TIFF decoding, the SHA-256 manifest), runner.py (the whole run:
parallel chips, staging, atomic moves into the dataset root).
"""
