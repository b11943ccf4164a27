"""Flowtel's HTTP server: ingestion, auth, listing and the single SQLite writer."""

__version__ = "0.1.0"
