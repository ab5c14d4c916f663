"""Online domain-mixing policies: pure numpy, one small protocol (no torch, streaming or composer)."""
