"""Regional identity: the master patient index (EMPI).

Every Patient a hospital pushes is linked to one regional *person*: at once on
a verified GB 11643 resident ID number, otherwise by a demographic score with a
review queue for the doubtful cases. Persons, links and review items live in
the document store as internal documents (types starting with ``_``), written
in the same transaction as the Patient that caused them.

Modules: :mod:`~hie.identity.resident_id` (the number itself),
:mod:`~hie.identity.keys` (the key its hash is taken under),
:mod:`~hie.identity.matching` (features and scoring), :mod:`~hie.identity.model`
(the internal documents and events), :mod:`~hie.identity.service` (linking and
following links), :mod:`~hie.identity.hooks` (the write-path hook),
:mod:`~hie.identity.admin` (link, unlink, merge, review queue),
:mod:`~hie.identity.pix` (``Patient/$ihe-pix``), :mod:`~hie.identity.masking`
(hiding the number in responses and logs), :mod:`~hie.identity.router` (the
HTTP routes) and :mod:`~hie.identity.cli` (``hie identity …``).
"""
