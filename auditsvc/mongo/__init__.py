"""PyMongo async implementations of the store Protocols in ``auditsvc.store``.

Everything that knows about collection names, BSON documents or the driver
lives in this package, so that another driver could replace it in one place.
"""

from auditsvc.mongo.backfill import MongoBackfillStore
from auditsvc.mongo.candles import MongoCandleStore
from auditsvc.mongo.client import Database, connect
from auditsvc.mongo.duplicates import MongoDuplicateStore
from auditsvc.mongo.leader_store import MongoLeadershipStore
from auditsvc.mongo.state import MongoStateStore

__all__ = [
    "Database",
    "MongoBackfillStore",
    "MongoCandleStore",
    "MongoDuplicateStore",
    "MongoLeadershipStore",
    "MongoStateStore",
    "connect",
]
