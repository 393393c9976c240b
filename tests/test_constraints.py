"""The install files agree: the torch pin is present everywhere an install happens."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def pins(text):
    return dict(re.findall(r"^\s*-?\s*([A-Za-z0-9_.-]+)==([^\s#]+)", text, re.M))


def test_torch_is_pinned_to_the_cpu_wheel_everywhere():
    """constraints, environment.yml and .ci/run all pin torch==2.13.0 (a newer torch pulls CUDA)."""
    assert pins((ROOT / "requirements/constraints.txt").read_text())["torch"] == "2.13.0"
    assert pins((ROOT / "environment.yml").read_text())["torch"] == "2.13.0"
    assert "-c requirements/constraints.txt" in (ROOT / ".ci/run").read_text()


def test_environment_yml_pins_match_constraints():
    """conda users get exactly the versions pip users get."""
    assert pins((ROOT / "environment.yml").read_text()) == pins((ROOT / "requirements/constraints.txt").read_text())


def test_documented_commands_are_the_ci_commands():
    """.ci/run runs the README's install command and CONTRIBUTING's test command verbatim."""
    readme = (ROOT / "README.md").read_text()
    contributing = (ROOT / "CONTRIBUTING.md").read_text()
    ci = (ROOT / ".ci/run").read_text()
    install = re.search(r"^(python -m pip install .*)$", readme, re.M).group(1)
    test = re.search(r"^(python -m pytest)$", contributing, re.M).group(1)
    assert install in ci
    assert re.search(rf"^{re.escape(test)}$", ci, re.M), f"{test!r} is not a line of .ci/run"
