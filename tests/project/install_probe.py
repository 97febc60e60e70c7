"""Run by the Python of an install under test (not by pytest): imports modules, asks every
``factory`` command for its ``--help``, and prints what failed as one JSON object.

    python install_probe.py --packages edge_agent,simulator --skip factory.db --forbid numpy,psycopg
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import pkgutil
import sys
import traceback


def modules(packages: list[str]) -> list[str]:
    found = []
    for name in packages:
        package = importlib.import_module(name)
        found.append(name)
        found += [m.name for m in pkgutil.walk_packages(package.__path__, prefix=f"{name}.")]
    return found


def import_all(names: list[str], skip: set[str]) -> dict[str, str]:
    failed = {}
    for name in names:
        if name in skip or name.endswith(".__main__"):  # importing it runs the command line
            continue
        try:
            importlib.import_module(name)
        except Exception as exc:
            failed[name] = f"{type(exc).__name__}: {exc}"
    return failed


def help_all(only: set[str]) -> tuple[int, dict[str, str]]:
    """``--help`` of ``factory`` and every command under it (under the groups in ``only``, if given)."""
    import click
    from click.testing import CliRunner

    from factory_cli.command import main

    runner, failed, count = CliRunner(), {}, 0
    stack: list[tuple[list[str], click.Command]] = [([], main)]
    while stack:
        path, command = stack.pop()
        result = runner.invoke(main, [*path, "--help"], catch_exceptions=True)
        count += 1
        if result.exit_code != 0 or "Usage:" not in result.output:
            error = "".join(traceback.format_exception(result.exception)) if result.exception else result.output
            failed[" ".join(["factory", *path])] = error[-2000:]
        if isinstance(command, click.Group):
            ctx = click.Context(command)
            for name in command.list_commands(ctx):
                if only and not path and name not in only:
                    continue
                sub = command.get_command(ctx, name)
                if sub is not None:
                    stack.append(([*path, name], sub))
    return count, failed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--packages", required=True)
    parser.add_argument("--skip", default="")
    parser.add_argument("--forbid", default="")
    parser.add_argument("--commands", default="", help="Only these of factory's commands (default: all).")
    args = parser.parse_args()
    names = modules(args.packages.split(","))
    failed = import_all(names, set(filter(None, args.skip.split(","))))
    commands, help_failed = help_all(set(filter(None, args.commands.split(","))))
    # Neither loaded nor even installed: the edge install must not carry the cloud's packages.
    forbidden = sorted(
        m for m in filter(None, args.forbid.split(",")) if m in sys.modules or importlib.util.find_spec(m)
    )
    print(json.dumps({"modules": len(names), "import_failed": failed, "commands": commands,
                      "help_failed": help_failed, "forbidden_loaded": forbidden}))  # fmt: skip


if __name__ == "__main__":
    main()
