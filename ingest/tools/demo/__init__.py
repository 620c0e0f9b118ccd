"""``streamssl demo``: the whole pipeline in one process — a camera (a synthetic traffic clip with labelled events,
or ``--source``) → ingest → bus → trainer → export + promotion gate → registry → serving (stream mode and HTTP) →
anomaly scores — for a bounded time, then a report. Read in order: ``command.py`` (flags) → ``pipeline.py`` (the
stages) → ``scoring.py`` (window labels and AUROC) → ``samples.py`` (what the report shows of the model)."""
