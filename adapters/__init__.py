"""Framework adapters, installed as ``tropref.adapters``: ``tropref.adapters.torch`` and
``tropref.adapters.keras`` translate models to and from tropref's network description.
Importing this package imports no framework; each submodule imports its own.
"""
