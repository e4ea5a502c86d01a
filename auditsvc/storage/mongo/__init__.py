"""MongoDB implementations of the Protocols in ``auditsvc.storage.interfaces``.

Everything that knows about collection names, BSON documents or the driver lives in this
package (the database handle and indexes, document codecs, candles, audit state,
backfills, the duplicate archive, the lease, its gate and the fence), so that another
driver could replace it in one place. It may import ``auditsvc.storage``,
``auditsvc.ops``, ``auditsvc.domain``, the standard library and third-party packages.
``tests/test_layers.py`` enforces this.
"""

from auditsvc.storage.mongo.backfill_store import MongoBackfillStore
from auditsvc.storage.mongo.candle_store import MongoCandleStore
from auditsvc.storage.mongo.database import Database, connect
from auditsvc.storage.mongo.duplicate_store import MongoDuplicateStore
from auditsvc.storage.mongo.leadership_store import MongoLeadershipStore
from auditsvc.storage.mongo.state_store import MongoStateStore

__all__ = [
    "Database",
    "MongoBackfillStore",
    "MongoCandleStore",
    "MongoDuplicateStore",
    "MongoLeadershipStore",
    "MongoStateStore",
    "connect",
]
