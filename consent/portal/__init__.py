"""The patient portal (``/portal``): server-rendered pages over a
:class:`~consent.portal.data.PortalData`; see ``docs/portal.md``."""

from consent.portal.data import AccessEntry, PortalData
from consent.portal.routes import portal_router
from consent.portal.security import PortalConfig

__all__ = ["AccessEntry", "PortalConfig", "PortalData", "portal_router"]
