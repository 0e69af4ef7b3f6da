"""TLS Termination Lab: a readable, threaded reverse proxy that terminates TLS."""

__version__ = "0.1.0"
