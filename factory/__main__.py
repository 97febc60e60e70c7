"""`python -m factory`: the same as the `factory` command."""

from factory.cli import main

main()
