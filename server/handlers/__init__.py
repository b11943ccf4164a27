"""Thin HTTP handlers: parse the request, call the owning module, answer JSON."""
