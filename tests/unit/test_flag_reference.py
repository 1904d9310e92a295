"""docs/configuration.md's flag table is what the scripts' own parsers say, flag for flag."""

import re

from kafka_project import flag_reference


def test_the_configuration_page_holds_the_table_the_parsers_generate():
    page = flag_reference.PAGE.read_text(encoding="utf-8")
    assert page == flag_reference.page_with_table(page), (
        "docs/configuration.md is out of date: python -m kafka_project.flag_reference --write"
    )


def test_every_flag_of_every_script_is_on_the_page_and_the_page_names_no_other():
    page = flag_reference.PAGE.read_text(encoding="utf-8")
    generated = page.partition(flag_reference.BEGIN)[2].partition(flag_reference.END)[0]
    on_page = set(re.findall(r"^\| `(--[a-z-]+)`", generated, flags=re.MULTILINE))
    in_parsers = {
        flag
        for name, build in flag_reference.script_parsers().items()
        for _, parser in flag_reference.commands(name, build())
        for action in parser._actions
        for flag in action.option_strings
        if flag.startswith("--") and flag != "--help"
    }
    assert on_page == in_parsers
    assert {"--max-in-flight-bytes", "--share-group", "--dry-run"} <= on_page  # each script's parser is read


def test_defaults_on_the_page_do_not_depend_on_the_environment(monkeypatch):
    monkeypatch.setenv("ORDERS_TOPIC", "somewhere-else")
    monkeypatch.setenv("FAILURE_RATE", "0.9")
    assert "somewhere-else" not in flag_reference.table()
    assert "default 0.3" in flag_reference.table()
