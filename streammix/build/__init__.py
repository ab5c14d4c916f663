"""The offline pipeline behind ``streammix-build``: stages, worker processes, resumable runs."""
