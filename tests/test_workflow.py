"""The publishing workflow cannot run here: check what it calls and that it agrees with .ci/run, the
README and _config.yml. Fast and offline: it only reads files."""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text(encoding="utf-8"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
README = (ROOT / "README.md").read_text(encoding="utf-8")
CI_RUN = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
ON_MAIN = "github.event_name == 'push' && github.ref == 'refs/heads/main'"


def _commands(script: str) -> list[str]:
    """The command lines of a shell script or ``run:`` block, without comments and blank lines."""
    lines = (line.split(" #")[0].strip() for line in script.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _pages_url() -> str:
    """GitHub Pages' address for _config.yml's repository: https://OWNER.github.io/NAME/."""
    url = CONFIG["repository"]["url"]
    owner, name = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+?)/?", url).groups()
    return f"https://{owner.lower()}.github.io/{name}/"


def test_it_runs_on_pushes_to_main_and_on_pull_requests():
    triggers = WORKFLOW.get("on", WORKFLOW.get(True))  # YAML 1.1 reads a bare `on` as True
    assert triggers["push"]["branches"] == [CONFIG["repository"]["branch"]] == ["main"]
    assert "pull_request" in triggers


def test_the_build_job_runs_ci_and_the_readmes_two_commands():
    for command in ("make book", "make test"):
        assert f"\n{command}" in README, f"the README no longer shows `{command}`"
    build = WORKFLOW["jobs"]["build"]
    commands = [line for step in build["steps"] if "run" in step for line in _commands(step["run"])]
    assert commands == [".ci/install-chromium", "make test", "make book"]
    assert _commands(CI_RUN)[-2:] == [".ci/install-chromium", "make test"], \
        ".ci/run and the workflow must install Chromium and run `make test` alike"
    assert build["steps"][0]["uses"].startswith("actions/checkout@")
    assert "bookworm" in build["container"], "a Debian container, as root: where .ci/install-chromium works"


def test_main_deploys_the_built_html_with_the_official_pages_actions():
    build, deploy = WORKFLOW["jobs"]["build"], WORKFLOW["jobs"]["deploy"]
    upload = [step for step in build["steps"]
              if step.get("uses", "").startswith("actions/upload-pages-artifact@")]
    assert len(upload) == 1 and upload[0]["with"]["path"] == "_build/html"
    assert upload[0]["if"] == ON_MAIN + " && matrix.torch == 'newest'", "only main publishes, once"
    assert build["steps"][-1] is upload[0], "the website is uploaded after both commands passed"
    assert deploy["if"] == ON_MAIN and deploy["needs"] == "build"
    assert [step["uses"].split("@")[0] for step in deploy["steps"]] == ["actions/deploy-pages"]
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert WORKFLOW["permissions"] == {"contents": "read"}, "only the deploy job may write"


def test_readme_and_config_link_the_published_book():
    assert _pages_url() in README, f"the README must link the published book, {_pages_url()}"
    assert CONFIG["html"]["baseurl"] == _pages_url()


def _pins(path: Path) -> dict:
    """``name==version`` lines of a pip constraints file, as {name: version}."""
    lines = (line.split("#")[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return dict(line.split("==") for line in lines if line)


def test_the_build_runs_at_pyprojects_torch_floor_and_at_the_newest_release():
    build = WORKFLOW["jobs"]["build"]
    assert build["strategy"]["matrix"]["torch"] == ["floor", "newest"]
    assert build["strategy"]["fail-fast"] is False, "a failure at one end must not hide the other's"
    assert build["env"]["PIP_CONSTRAINT"] == ".ci/torch-${{ matrix.torch }}.txt"
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        pytest.skip("reading pyproject.toml needs tomllib (Python 3.11+)")
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "dependencies"]
    floors = dict(d.split(">=") for d in dependencies if d.startswith(("torch>=", "torchvision>=")))
    assert _pins(ROOT / ".ci" / "torch-floor.txt") == floors, "the floor leg installs pyproject's floor"
    assert _pins(ROOT / ".ci" / "torch-newest.txt") == {}, "the newest leg pins nothing"
    assert f"torch {floors['torch']}" in README and f"torchvision {floors['torchvision']}" in README, \
        "the README says which versions were tested"
