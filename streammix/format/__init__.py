"""The I/O layer: raw corpus readers, MDS writing, the metadata sidecar and fingerprints."""
