"""The metadata path's orchestrator end: guests' metadata requests, checked, signed, to Nova.

:class:`~astara_actors.metadata.proxy.MetadataProxy` serves it (see its module for what it
checks and how it answers); the checks read the routers' pushes from
:class:`~astara_actors.core.metadata_index.MetadataIndex`.
"""

from astara_actors.metadata.proxy import MetadataProxy, MetadataProxyError, sign

__all__ = ["MetadataProxy", "MetadataProxyError", "sign"]
