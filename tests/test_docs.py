"""The commands in README.md, docs/instructors.md and CONTRIBUTING.md exist as written.

``tests/test_constraints.py`` checks that CI runs the documented install and test commands; this
file checks every ``coursekit`` command line against the real parser, every option the instructor
page names, and the maintainer commands' scripts, flags and paths.
"""
import argparse
import pathlib
import re
import subprocess
import sys

import pytest

from coursekit import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/instructors.md", "CONTRIBUTING.md")


def _text(name):
    return (ROOT / name).read_text()


def _coursekit_commands(name):
    """``coursekit ...`` in inline code or at the start of a line of a code block, one line each."""
    text = _text(name)
    found = re.findall(r"`(coursekit [^`]*)`", text) + re.findall(r"^(coursekit .*)$", text, re.M)
    return [" ".join(c.split()) for c in found]


def _options(command):
    """The option strings ``coursekit <command>`` accepts."""
    parser = cli.build_parser(command)
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices[command]._option_string_actions)


@pytest.mark.parametrize("name", DOCS)
def test_every_documented_coursekit_command_parses(name):
    """Each ``coursekit`` command the page shows names a real subcommand and parses with its options."""
    commands = _coursekit_commands(name)
    assert commands, f"{name} shows no coursekit command"
    for command in commands:
        words = command.split()[1:]
        assert words[0] in cli._SUBCOMMANDS, f"{name}: `{command}`: no subcommand {words[0]!r}"
        if command in ("coursekit grade", "coursekit gradescope-bundle"):
            continue  # the command named in prose, its required arguments shown elsewhere on the page
        try:
            cli.build_parser(words[0]).parse_args(words)
        except SystemExit:
            pytest.fail(f"{name}: `{command}` is refused by coursekit's parser")


def test_a_wrong_documented_command_would_be_caught():
    """The parse above can fail: an option coursekit does not have is refused."""
    with pytest.raises(SystemExit):
        cli.build_parser("grade").parse_args(["grade", "x.ipynb", "--no-such-option"])


def test_every_option_the_instructor_page_names_exists():
    """Each ``--option`` in docs/instructors.md is an option of ``grade``, ``build`` or ``gradescope-bundle``."""
    named = set(re.findall(r"`[^`]*?(--[a-z][a-z0-9-]*)", _text("docs/instructors.md")))
    known = _options("grade") | _options("build") | _options("gradescope-bundle")
    assert named and not named - known, f"documented but not accepted: {sorted(named - known)}"



def test_every_option_of_the_course_commands_is_documented():
    """Each option of ``build``, ``grade`` and ``gradescope-bundle`` appears in the README or the instructor page."""
    text = _text("README.md") + _text("docs/instructors.md")
    for command in ("build", "grade", "gradescope-bundle"):
        missing = sorted(o for o in _options(command) if o.startswith("--") and o != "--help" and o not in text)
        assert not missing, f"coursekit {command}: {missing} documented nowhere"

def test_maintainer_commands_name_real_scripts_flags_and_paths():
    """CONTRIBUTING's benchmark flags are run.py's; the files the docs send readers to exist."""
    contributing = _text("CONTRIBUTING.md")
    usage = re.search(r"`python benchmarks/run.py ([^`]*)`", contributing).group(1)
    flags = set(re.findall(r"--[a-z-]+", usage))
    helptext = subprocess.run([sys.executable, "benchmarks/run.py", "--help"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60).stdout
    assert flags and all(f in helptext for f in flags), (flags, helptext[:500])
    assert "`ruff check coursekit tests benchmarks`" in contributing  # what tests/test_lint.py runs
    for path in ("tests/test_browser.py", "tests/test_stability.py", "tests/test_stability_more.py",
                 "tests/nbval_sanitize.cfg", "environment.yml", "requirements/constraints.txt",
                 ".github/workflows/classroom.yml", "notebooks/00_start_here.ipynb", "docs/instructors.md",
                 "CONTRIBUTING.md"):
        assert (ROOT / path).exists(), path
        assert any(path in _text(name) for name in DOCS), f"{path} is no longer mentioned: drop it here"


def test_readme_links_resolve():
    """Every relative link of the README and the instructor page points at a file of the repository."""
    for name in ("README.md", "docs/instructors.md", "CONTRIBUTING.md"):
        base = (ROOT / name).parent
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", _text(name)):
            assert (base / target).exists(), f"{name}: link to {target} is broken"
