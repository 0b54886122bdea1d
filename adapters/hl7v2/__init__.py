"""HL7 v2 source of the hospital adapter: ER7 parser, mapping to FHIR, ACKs and an
MLLP listener. See ``docs/adapters-hl7v2.md``."""
