"""Settings of the exchange, read from ``HIE_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache

from pydantic_settings import SettingsConfigDict

from hie.auth.config import AuthSettings

#: Identifier system of resident ID numbers (居民身份证号码) in this region: the
#: OID of the national identity-card number in China's health information
#: standards. Override with HIE_RESIDENT_ID_SYSTEM.
DEFAULT_RESIDENT_ID_SYSTEM = "urn:oid:2.16.156.10011.1.1"


class Settings(AuthSettings):
    """One settings object for the exchange (``hie serve``); the trust layer's
    fields (token lifetimes, clock skew) come from :class:`AuthSettings`."""

    model_config = SettingsConfigDict(env_prefix="HIE_", extra="ignore")

    #: ``sqlite:///./var/hie.db`` (embedded default) or ``mongodb://…``.
    store_url: str = "sqlite:///./var/hie.db"
    #: Empty: the consent service runs in-process; otherwise its base URL.
    consent_url: str = ""
    #: How long the exchange waits for a remote consent service (then: deny).
    consent_timeout: float = 2.0
    #: How long a break-the-glass window stays open after it starts.
    break_glass_hours: float = 4.0
    #: The public base URL; links in responses and the token audience derive from it.
    base_url: str = "http://127.0.0.1:8080"
    resident_id_system: str = DEFAULT_RESIDENT_ID_SYSTEM
    #: Folder for the embedded store, generated keys and other local state.
    var_dir: str = "./var"
    #: Largest request body accepted, in bytes (larger → 413).
    max_body_bytes: int = 32 * 1024 * 1024
    #: Page size when the client gives no ``_count``, and the largest allowed.
    default_page_size: int = 50
    max_page_size: int = 1000
    #: Most entries in one transaction or batch Bundle.
    max_bundle_entries: int = 5000
    #: Identifier system of a DICOM PatientID (the hospital's MRN) when the
    #: instance's IssuerOfPatientID names none; the HL7 adapter's default MRN system.
    dicom_patient_id_system: str = "urn:hie:hospital:mrn"

    @property
    def fhir_base(self) -> str:
        """The public FHIR base URL (``…/fhir``)."""
        return self.base_url.rstrip("/") + "/fhir"


@lru_cache
def get_settings() -> Settings:
    """Return the process-wide settings read from the environment."""
    return Settings()
