"""The install files agree: the torch pin is present everywhere an install happens, each supported
Python has a pin for every package, pyproject's lower bounds admit exactly those pins, and the
Python 3.10 set resolves with pip's resolver (``--python-version 3.10``, no 3.10 interpreter needed)."""
import json
import pathlib
import re
import subprocess
import sys

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYTHONS = ("3.10", "3.11")  # requires-python >= 3.10; 3.11 is what CI and the stored outputs use


def pins(text):
    return dict(re.findall(r"^\s*-?\s*([A-Za-z0-9_.-]+)==([^\s#;]+)", text, re.M))


def constraints_for(python: str) -> dict[str, str]:
    """``{name: version}`` of requirements/constraints.txt as pip reads it on ``python`` (markers evaluated
    with packaging, the library pip uses; ``pip --python-version`` does not apply them to constraints)."""
    out = {}
    for line in (ROOT / "requirements/constraints.txt").read_text().splitlines():
        text = line.split("#")[0].strip()
        if text:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"python_version": python, "python_full_version": python + ".0"}):
                assert req.name not in out, f"{req.name} pinned twice for Python {python}"
                out[req.name] = str(req.specifier).removeprefix("==")
    return out


def project_requirements(python: str) -> list[Requirement]:
    """pyproject's dependencies and test extra that apply on ``python``."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]
    env = {"python_version": python, "python_full_version": python + ".0", "extra": "test"}
    return [r for r in reqs if r.marker is None or r.marker.evaluate(env)]


def test_torch_is_pinned_to_the_cpu_wheel_everywhere():
    """constraints, environment.yml and .ci/run all pin torch==2.13.0 (a newer torch pulls CUDA)."""
    assert pins((ROOT / "requirements/constraints.txt").read_text())["torch"] == "2.13.0"
    assert pins((ROOT / "environment.yml").read_text())["torch"] == "2.13.0"
    assert "-c requirements/constraints.txt" in (ROOT / ".ci/run").read_text()


def test_environment_yml_pins_match_constraints():
    """conda users (environment.yml: Python 3.11) get exactly the versions pip users get on 3.11."""
    env = (ROOT / "environment.yml").read_text()
    assert re.search(r"^\s*- python=3\.11$", env, re.M)
    assert pins(env) == constraints_for("3.11")


@pytest.mark.parametrize("python", PYTHONS)
def test_lower_bounds_admit_the_pins_and_nothing_older_than_the_course_needs(python):
    """Every dependency is pinned for each supported Python, and the pin satisfies pyproject's range;
    torch's floor is 2.13 (nn.RMSNorm, LayerNorm(bias=) and the aten ops the grader watches were checked there)."""
    pinned = constraints_for(python)
    for req in project_requirements(python):
        assert req.name in pinned, f"{req.name} has no pin for Python {python}"
        assert req.specifier.contains(pinned[req.name]), (python, req, pinned[req.name])
    (torch,) = [r for r in project_requirements(python) if r.name == "torch"]
    assert not torch.specifier.contains("2.12.1") and torch.specifier.contains("2.13.0")
    assert python != "3.10" or Version(pinned["numpy"]) < Version("2.3")  # numpy 2.3+ has no 3.10 build


def _pip(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=timeout,
                          env={**__import__("os").environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})


def test_python_310_resolves(tmp_path):
    """pip's resolver, for Python 3.10 with binary wheels only, installs the course's 3.10 pins: torch 2.13.0
    has a cp310 wheel (index query) and everything else resolves together with its dependencies
    (a dry run; torch's own CUDA dependency wheels, gigabytes, are left out of that run: setup.sh and
    CI install the CPU build, which has none). ``--python-version`` alone does not apply a wheel's
    Requires-Python here (pip 23.2 accepted ipykernel 7.4.0, ``>=3.11``, that a real 3.10 refuses), so
    every resolved package's Requires-Python, read from pip's ``--report``, must admit 3.10.12
    (Ubuntu 22.04's). Skips only when the package index cannot be reached."""
    from packaging.specifiers import SpecifierSet

    probe = _pip("index", "versions", "torch", "--python-version", "3.10", "--only-binary=:all:", timeout=120)
    if probe.returncode != 0 and re.search(r"connect|resolve|unreachable|Network|timed out|No matching distribution",
                                           probe.stderr, re.I):
        pytest.skip(f"the package index is unreachable: {probe.stderr.strip().splitlines()[-1]}")
    assert probe.returncode == 0, probe.stderr
    pinned = constraints_for("3.10")
    assert re.search(rf"Available versions:.*\b{re.escape(pinned['torch'])}\b", probe.stdout), probe.stdout
    constraints = tmp_path / "constraints-3.10.txt"
    constraints.write_text("".join(f"{n}=={v}\n" for n, v in pinned.items() if n != "torch"))
    wanted = [f"{r.name}{r.specifier}" for r in project_requirements("3.10") if r.name != "torch"]
    report = tmp_path / "report.json"
    done = _pip("install", "--dry-run", "--quiet", "--report", str(report), "--python-version", "3.10",
                "--only-binary=:all:", "--target", str(tmp_path / "t"), "-c", str(constraints), *wanted)
    assert done.returncode == 0, "\n".join(ln for ln in done.stderr.splitlines() if "is ignored" not in ln)[-3000:]
    installs = json.loads(report.read_text())["install"]
    meta = {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"] for item in installs}
    refused = {n: m["requires_python"] for n, m in meta.items()
               if m.get("requires_python") and not SpecifierSet(m["requires_python"]).contains("3.10.12")}
    assert not refused, f"these resolved packages do not run on Python 3.10: {refused}"
    for name, version in pinned.items():
        if name != "torch":
            assert meta[name.lower().replace("_", "-")]["version"] == version, (name, version)


def test_documented_commands_are_the_ci_commands():
    """.ci/run runs the README's install and test commands verbatim (CONTRIBUTING repeats the test command)."""
    readme = (ROOT / "README.md").read_text()
    contributing = (ROOT / "CONTRIBUTING.md").read_text()
    ci = (ROOT / ".ci/run").read_text()
    install = re.search(r"^(python -m pip install .*)$", readme, re.M).group(1)
    test = re.search(r"^(python -m pytest)$", readme, re.M).group(1)
    assert re.search(rf"^{re.escape(test)}$", contributing, re.M), "CONTRIBUTING gives another test command"
    assert install in ci
    assert re.search(rf"^{re.escape(test)}$", ci, re.M), f"{test!r} is not a line of .ci/run"


def test_coursekit_compiles_on_python_310(tmp_path):
    """Every coursekit module is valid Python 3.10 syntax (compiled by a real 3.10 interpreter when one is
    on PATH; ruff's target-version py310 covers the rest). Compiled into tmp_path, nothing written in the repo."""
    import shutil

    py310 = shutil.which("python3.10")
    if py310 is None:
        pytest.skip("no python3.10 interpreter on PATH")
    env = {**__import__("os").environ, "PYENV_VERSION": "3.10.13:system", "PYTHONPYCACHEPREFIX": str(tmp_path)}
    version = subprocess.run([py310, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True, env=env)
    if version.returncode != 0 or version.stdout.strip() != "(3, 10)":
        pytest.skip(f"python3.10 on PATH does not run here: {(version.stderr or version.stdout).strip()[-200:]}")
    files = sorted(str(p) for p in (ROOT / "coursekit").rglob("*.py"))
    done = subprocess.run([py310, "-m", "py_compile", *files], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
