"""Flowtel's analytics: DuckDB mirror, stats, insights and chat (never imports aiohttp or server)."""
