"""``streamssl report RUN_DIR``: one self-contained HTML page from a ``streamssl demo`` run directory.

``run_dir`` reads and validates the directory's files, ``figures`` draws each figure as PNG bytes (matplotlib, Agg),
``html`` assembles the page, ``command`` is the subcommand.
"""

from ingest.tools.report.command import add_parser, write_report

__all__ = ["add_parser", "write_report"]
