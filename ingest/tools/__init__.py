"""Tools above the services: the ``streamssl`` command (``synth``, ``windows tail``, ``demo``) and the synthetic
traffic world. The demo composes ingest, trainer and serving in one process, so this is the one room that may import
all three; nothing below it imports the tools."""
