"""Pure numpy + numba kernels of the streammix order (no torch, streaming or composer)."""
