"""Built-in tiny model family (placeholder; filled in below)."""
