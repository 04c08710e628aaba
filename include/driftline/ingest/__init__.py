"""Ingest: the source, the nightly ETL and its Great Expectations gate."""
