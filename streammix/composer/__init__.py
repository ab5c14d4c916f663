"""Composer glue: the online-mixing callback, per-domain losses, logging."""
