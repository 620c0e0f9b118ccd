"""Command-line plumbing shared by every StreamSSL command: common flags, layered configuration, logging."""
