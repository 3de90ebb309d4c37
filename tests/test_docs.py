"""Every CLI command appears in the README with an example."""

from pathlib import Path

import click

from aggregator.cli import cli

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def command_paths(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from command_paths(cmd, (*prefix, name))
        else:
            yield (*prefix, name)


def test_every_command_is_documented():
    missing = []
    for path in command_paths(cli):
        if path == ("story", "show"):  # `aggregator story ID` is its documented form
            path = ("story",)
        if f"aggregator {' '.join(path)}" not in README:
            missing.append(" ".join(path))
    assert not missing, f"commands without an example in README.md: {missing}"


def test_every_command_has_help():
    for path in command_paths(cli):
        cmd = cli
        for part in path:
            cmd = cmd.commands[part]
        assert cmd.help and len(cmd.help) > 10, path
