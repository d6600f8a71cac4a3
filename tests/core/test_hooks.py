"""Hooks other than registration: plugins add CLI sub-commands."""

import types

import mmcore
from mmcore.cli import main


def test_a_plugin_adds_a_cli_subcommand(capsys):
    plugin = types.SimpleNamespace()

    def hello(args):
        print(f"hello {args.who}")
        return 3

    @mmcore.hookimpl
    def mmcore_add_commands(subparsers):
        parser = subparsers.add_parser("hello", help="say hello")
        parser.add_argument("who")
        parser.set_defaults(handler=hello)

    plugin.mmcore_add_commands = mmcore_add_commands
    with mmcore.register_plugin(plugin, name="greeter"):
        assert main(["hello", "world"]) == 3
    assert capsys.readouterr().out.strip() == "hello world"
    assert main(["hello", "world"]) == 2, "gone once the plugin is unregistered"
