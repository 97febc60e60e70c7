"""``python -m factory_cli``: the same as the ``factory`` command."""

from factory_cli.command import main

main()
