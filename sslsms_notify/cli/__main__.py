"""``python -m sslsms_notify.cli``: the ``sslsms-notify`` command."""

from . import main

main()
