"""Queries over one collection: the contract every client shares (embedded, HTTP, CLI)."""
