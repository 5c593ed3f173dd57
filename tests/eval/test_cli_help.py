"""`rlhfv eval ... --help`: every subcommand describes itself and every option says what it does."""

from __future__ import annotations

import argparse

import pytest

from rlhfv.cli import build_parser, main


def _subcommands(parser: argparse.ArgumentParser, name: str):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _subcommands(sub, f"{name} {sub_name}")


def _eval_parser() -> argparse.ArgumentParser:
    top = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return top.choices["eval"]


@pytest.mark.parametrize(("name", "parser"), list(_subcommands(_eval_parser(), "eval")))
def test_every_eval_subcommand_has_a_description_and_option_help(name, parser):
    assert parser.description, f"rlhfv {name} --help has no description"
    undocumented = [
        a.option_strings[0]
        for a in parser._actions
        if a.option_strings and not isinstance(a, argparse._HelpAction) and not a.help
    ]
    assert undocumented == [], f"rlhfv {name}: options without help"


def test_chair_help_shows_the_description_and_json_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "chair", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Score existing responses (JSONL: image_id, response) with CHAIR" in text
    assert "--json print the result summary as JSON" in text
    assert "--allow-partial exit 0 when the endpoint failed for some items" in text
