"""The online feature store: the latest feature values per view and entity, newer-wins.

:mod:`refluent.online_store.base` holds the reader and writer interfaces and the key layout,
:mod:`refluent.online_store.redis` the Redis reader and writer, and
:mod:`refluent.online_store.memory` an in-memory store with the same semantics for tests.
"""
