"""The ``eventspine`` command line (entry point :func:`eventspine.cli.main.main`)."""
