"""StreamSSL's base package: the layers every service stands on, and the ingest service itself.

Read bottom-up: :mod:`ingest.contract` (the stream contract: windows, wire bytes, bus messages, dead letters,
topics), :mod:`ingest.bus` (Kafka and the embedded bus), :mod:`ingest.runtime` (settings, command lines, logging,
telemetry, durable files), :mod:`ingest.registry` (the trainer → serving model registry); then the ingest service
(:mod:`ingest.sources` → :mod:`ingest.pipeline` → :mod:`ingest.service`), and above all services
:mod:`ingest.tools`. Everything but the tools imports neither torch nor the trainer.
"""
