"""One room served by several lanchatd nodes through a Redis stream (docs/cluster.md).

Only :mod:`.node` imports ``redis``, and the server imports it only when the configuration
has a ``[cluster]`` section: a single node never loads it.
"""
