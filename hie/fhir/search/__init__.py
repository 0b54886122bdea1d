"""FHIR search: the index extractor run on every write (``extract``), the
parser that turns search parameters into a store query (``parse``), and the
value parsing the two share (``values``). The parameters themselves are the
data table :mod:`schemas.search_parameters`."""
