"""Consent service: policy model, decision engine, consent store access,
break-the-glass, consultation grants and the patient portal.

Filled by the consent issue; the exchange reaches it only through the small
consent-client interface (in-process or HTTP)."""
