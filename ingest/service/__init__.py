"""The ingest service: one worker per camera (decode → sample → window), one publisher per camera (fit → send)."""
