"""The HTTP relay (``sslsms-notify serve``): webhook bodies in, alerts for the pipeline out."""
