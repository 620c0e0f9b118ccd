"""StreamSSL ingest: camera streams to frame-sequence windows on the bus.

This package owns the stream contract (:mod:`ingest.contract`) and the bus (:mod:`ingest.bus`) that the trainer and
the serving node also use. It never imports torch or the trainer.
"""
