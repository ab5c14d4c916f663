"""Per-sample metadata as pure functions on text and arrays (no torch, streaming or composer)."""
