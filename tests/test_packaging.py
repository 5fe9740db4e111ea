"""`pip install .` gives a working `stbias` command, with the configs inside the package."""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_installed_command_runs_from_outside_the_checkout(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = wheels.glob("stbias-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
    )
    # the dependencies (torch, Lightning, ...) come from this environment's site-packages: a
    # plain path entry, so its editable install of stbias (a .pth import hook) is not picked up
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "stbias_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(WANDB_MODE="offline", OMP_NUM_THREADS="1")

    where = subprocess.run(
        [
            str(python),
            "-c",
            "import stbias, stbias.config as c; print(stbias.__file__, c.CONF_DIR)",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
    ).stdout
    assert str(venv) in where and str(ROOT) not in where  # the installed copy, not the checkout

    layers = subprocess.run(
        [str(venv / "bin" / "stbias"), "task=layers", "model=i3d_tiny"],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
        timeout=600,
    )
    assert layers.returncode == 0, layers.stderr[-2000:]
    assert "res4" in layers.stdout and "stages.2" in layers.stdout

    probe = subprocess.run(
        [
            str(python),
            "-m",
            "stbias",
            "model=i3d_tiny",
            "probe.num_clips=4",
            "probe.batch_size=4",
            "logger=none",
            "hydra.run.dir=run",
            "trainer.enable_progress_bar=false",
        ],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
        timeout=600,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    record = json.loads((work / "run" / "results.json").read_text())
    assert record["model"] == "i3d_tiny" and record["num_clips"] == 4
    assert list(record["layers"]) == ["stem", "res2", "res3", "res4"]


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {r.name: r for r in map(Requirement, project["dependencies"])}


@pytest.mark.parametrize(
    "system, machine, wants_decord",
    [
        ("Linux", "x86_64", True),
        ("Windows", "AMD64", True),
        ("Darwin", "x86_64", True),
        ("Darwin", "arm64", False),  # no decord wheel: PyAV reads the videos there
        ("Linux", "aarch64", False),
    ],
)
def test_decord_only_where_it_has_wheels(system, machine, wants_decord):
    requirements = _requirements()
    where = {"platform_system": system, "platform_machine": machine, "sys_platform": "x"}
    decord = requirements["decord"]
    assert (decord.marker is None or decord.marker.evaluate(where)) == wants_decord
    av = requirements["av"]  # the reader of every other platform is always installed
    assert av.marker is None


def test_metadata_names_the_project():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["authors"] == project["maintainers"] == [{"name": "stbias developers"}]
    home = "https://github.com/stbias/stbias"
    assert project["urls"] == {
        "Homepage": home,
        "Repository": home,
        "Issues": f"{home}/issues",
        "Documentation": f"{home}/tree/main/docs",
    }


def _make_recipe(makefile: str, target: str) -> list[str]:
    """The command lines of ``target`` in the Makefile."""
    lines = makefile.split(f"\n{target}:", 1)[1].splitlines()[1:]
    recipe = []
    for line in lines:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def test_ci_runs_the_readmes_test_command_which_lints_then_runs_every_test():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Two commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].split() for line in block.splitlines() if line.strip()]
    (test_command,) = [c for c in commands if "test" in c]
    assert test_command == ["make", "lint", "test"]
    ci = [line.split() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert ["exec", *test_command] in ci
    makefile = (ROOT / "Makefile").read_text()
    (pytest_line,) = _make_recipe(makefile, "test")
    assert pytest_line.split(";")[0] == "$(PY) -m pytest -q"  # every test: no marker left out
    assert "$$rc -eq 5" in pytest_line  # no test collected is not a failure
    assert _make_recipe(makefile, "test-fast") == ['$(PY) -m pytest -q -m "not slow"']
    assert "make test-fast" in readme


def test_make_lint_covers_every_python_file_of_the_tree():
    """A folder of Python that the linter does not name would drift from the house style."""
    makefile = (ROOT / "Makefile").read_text()
    listed = makefile.split("LINT_PATHS = $(wildcard ", 1)[1].split(")", 1)[0].split()
    assert _make_recipe(makefile, "lint") == [
        "$(PY) -m ruff check $(LINT_PATHS)",
        "$(PY) -m ruff format --check $(LINT_PATHS)",
    ]
    tracked = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    assert {path.split("/", 1)[0] for path in tracked} <= set(listed)
