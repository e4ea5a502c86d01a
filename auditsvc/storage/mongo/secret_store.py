"""Per-deployment secrets, generated once and kept in the database.

The first replica to ask creates the secret (256 random bits) with an upsert;
every later replica, and every restart, reads the same one, so what one replica
signs every other accepts. Anyone who can read the database can read it: it
protects against clients, not against database administrators.
"""

from __future__ import annotations

import secrets

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from auditsvc.storage.mongo.database import Database

SECRETS = "deployment_secrets"


async def deployment_secret(database: Database, name: str) -> str:
    """The secret called ``name``, created on first use."""
    collection = database.db[SECRETS]
    query = {"_id": name}
    update = {"$setOnInsert": {"secret": secrets.token_urlsafe(32)}}
    try:
        doc = await collection.find_one_and_update(
            query, update, upsert=True, return_document=ReturnDocument.AFTER
        )
    except DuplicateKeyError:  # another replica inserted it between our match and insert
        doc = await collection.find_one(query)
    if doc is None:  # an upsert returning AFTER always has it; only a concurrent delete lands here
        raise RuntimeError(f"deployment secret {name!r} was deleted while being read")
    return str(doc["secret"])
