"""The doors into the pipeline: :mod:`logging`, structlog, apprise."""
