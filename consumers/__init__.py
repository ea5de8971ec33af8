"""The consumer groups: the shared runtime (``runtime``) and one package per worker."""
