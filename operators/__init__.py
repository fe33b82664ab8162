"""Ray-free operators and their codecs: sources, decoders, patch generators, featurizers,
index shards, stores and sinks. Each runs on a list of frames in one process.

Importing :mod:`streamvision.core` here (the layer below) first runs the ``streamvision``
package's own ``__init__``, which re-exports every layer; it must finish before any operator
module starts, so this package's first import is that one.
"""

import streamvision.core  # noqa: F401
