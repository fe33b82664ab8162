"""The Ray runtime: actor pools and channels, the offsets protocol, the live service, MOP,
the embedded broker. Imports ``operators`` and :mod:`streamvision.plan`, never the facade.

As in ``operators``, the first import is the core layer, so that the ``streamvision``
package's ``__init__`` (which re-exports every layer) completes before a runtime module runs.
"""

import streamvision.core  # noqa: F401
