"""Where model bytes live: local folders and S3, a catalog of their models, a local cache.

Below ``repository`` in the layers: it knows Triton's layout only as far as the identity
rules of docs/model-store.md (``catalog.py``) and produces local folders that
``modelyard.repository.scan_model`` loads (``cache.py``). boto3 is imported by ``s3.py``
only, and only when an S3 store is opened.

    store = open_store("s3://bucket/models")
    models = catalog(store.list())
    cache = ModelCache(Path("/var/cache/modelyard"), max_bytes=20 << 30)
    with cache.materialized(store, models["mlp"]) as folder:
        entry = scan_model(folder)
"""

from modelyard.store._archive import (
    ArchiveError,
    ArchiveLayoutError,
    ArchiveTooLarge,
    CorruptArchive,
    UnsafeArchiveMember,
)
from modelyard.store.base import (
    RESERVED_FOLDER,
    ObjectExists,
    Progress,
    Store,
    StoreError,
    StoreObject,
    WritableStore,
    open_store,
    open_writable_store,
)
from modelyard.store.cache import CacheStats, ModelCache
from modelyard.store.catalog import StoreModel, VersionSource, catalog, parse_artifact_name
from modelyard.store.local import LocalStore
from modelyard.store.memory import MemoryStore

__all__ = [
    "RESERVED_FOLDER",
    "ArchiveError",
    "ArchiveLayoutError",
    "ArchiveTooLarge",
    "CacheStats",
    "CorruptArchive",
    "LocalStore",
    "MemoryStore",
    "ModelCache",
    "ObjectExists",
    "Progress",
    "Store",
    "StoreError",
    "StoreModel",
    "StoreObject",
    "UnsafeArchiveMember",
    "VersionSource",
    "WritableStore",
    "catalog",
    "open_store",
    "open_writable_store",
    "parse_artifact_name",
]
