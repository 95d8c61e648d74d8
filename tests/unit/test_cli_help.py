"""Every subcommand's --help renders (argparse %-formats help texts: a stray '%' breaks it)."""

import pytest

from escala.cli.main import SUBCOMMANDS, build_parser, main


def _names():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sorted(sub.choices)


@pytest.mark.parametrize("name", _names())
def test_help_renders(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_every_subcommand_module_is_registered():
    assert len(_names()) >= len(SUBCOMMANDS)
