"""The runtime every StreamSSL service starts on: layered settings and the command line built from them, logging,
the ``/metrics`` ``/healthz`` ``/readyz`` server, stop signals and exit codes, dead-letter writing and crash-safe
file writes. It knows the stream contract and the bus, never a service."""
