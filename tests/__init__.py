"""The test suite: one package, imported as ``tests`` (``tests.support`` and its helpers)."""
