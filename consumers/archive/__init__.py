"""The archive worker: each unique push once, in Avro Object Container Files (``files.py``)."""
