"""The ``factory`` command, above every part: it names each part's commands and loads one
only when it runs."""

from factory_cli.command import main

__all__ = ["main"]
