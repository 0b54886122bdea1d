"""Sources: what turns a hospital's data into outbox messages.

Every source follows one rule so that the pusher's re-sends are harmless: each
message is a FHIR *transaction* Bundle whose entries are conditional updates
(``PUT Type?identifier=system|value``) or conditional creates (``ifNoneExist``)
on the hospital's own identifiers; local references between entries use
``urn:uuid:`` full URLs, references to resources sent earlier use conditional
references (``Patient?identifier=…``). A Bundle sent twice then writes the same
resources, never a second copy. The ``patient_key`` of a message names the
patient (``system|value`` of the hospital's identifier) so that the outbox keeps
that patient's messages in order.
"""
