"""The MongoDB back end of the document store (PyMongo ``AsyncMongoClient``).

``compile`` turns a :class:`~hie.store.query.SearchQuery` into a filter
document, ``indexes`` declares the indexes those filters rely on,
``documents`` the stored document shapes, ``search`` runs queries,
``visibility`` resolves which resources a grant opens for version reads,
``transaction`` runs transactions with retries, and ``store`` ties them into
:class:`MongoStore`.
"""

from hie.store.mongo.store import MongoStore

__all__ = ["MongoStore"]
