"""Result storage: the parquet schema and atomic, resumable writes."""
