"""mmcore's built-in plugins (import package ``mmcore_plugins``).

Each module here is one plugin, listed in the ``mmcore`` entry-point group of mmcore's
pyproject and registered through its ``mmcore_register`` hook exactly as a third-party plugin
is. Nothing here is imported by ``mmcore`` itself.
"""
