"""Memory adapters: the trainable parameters that hold an absorbed document.

Each adapter kind has a backend that is installed once on a base model and can then switch between
any number of memories without touching the base weights (see :class:`AdapterBackend`).
"""
