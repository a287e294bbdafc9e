"""The ``alexnet`` command. Each subcommand is a module here with ``add_parser``."""
