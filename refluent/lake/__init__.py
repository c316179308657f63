"""The lake: Iceberg tables in one catalog, and what keeps them right and fast.

- :mod:`~refluent.lake.catalog`: open the catalog, name, load and create tables, transactions.
- :mod:`~refluent.lake.offsets`: the consumed offsets a table keeps in its snapshots.
- :mod:`~refluent.lake.schema`: schema evolution (new columns, widening, conflict columns).
- :mod:`~refluent.lake.mappings`: how a consumed record becomes a row of each kind of table.
- :mod:`~refluent.lake.maintenance`: compaction, snapshot expiry, orphan files, CDC state.
- :mod:`~refluent.lake.query`: DuckDB SQL over a namespace's tables.
- :mod:`~refluent.lake.errors`: :class:`~refluent.lake.errors.LakeError` and its kinds.

The sink that writes the tables from Kafka is :class:`refluent.sinks.iceberg.IcebergSink`.
Every module but ``errors`` needs the ``iceberg`` extra (``pip install 'refluent[iceberg]'``).
"""
