"""The Dockerfiles under deploy/docker, checked without an engine: hadolint finds nothing; every final stage is
non-root, health-checked and runs its console command; and each image installs exactly its pyproject extra (the
serving images without torch; the CUDA serving image with onnxruntime-gpu in onnxruntime's place)."""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.deploy.tools import DOCKER, REPO, run, tool

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# (Dockerfile, build target, the extra its Python packages must be, requirement swaps of that flavour)
IMAGES = [
    ("ingest.Dockerfile", "runtime", "ingest", {}),
    ("trainer.Dockerfile", "cpu", "trainer", {}),
    ("trainer.Dockerfile", "cuda", "trainer", {}),
    ("serving.Dockerfile", "cpu", "serving", {}),
    ("serving.Dockerfile", "cuda", "serving", {"onnxruntime": "onnxruntime-gpu"}),
]
COMMANDS = {"ingest": "streamssl-ingest", "trainer": "streamssl-train", "serving": "streamssl-serve"}


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def stages(dockerfile: str) -> dict[str, Stage]:
    """The stages of a Dockerfile by name, each with its instructions (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", (DOCKER / dockerfile).read_text())
    result: dict[str, Stage] = {}
    current: Stage | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else str(len(result))
            current = result[name] = Stage(name, parts[0])
        elif current is not None:
            current.instructions.append((keyword, rest.strip()))
    return result


def lineage(all_stages: dict[str, Stage], name: str) -> list[Stage]:
    """A stage and the stages it is built FROM, oldest first."""
    chain = [all_stages[name]]
    while chain[0].base in all_stages:
        chain.insert(0, all_stages[chain[0].base])
    return chain


def canonical(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def extra_requirements(extra: str) -> dict[str, str]:
    """Requirement name -> its spec, for the core dependencies plus an extra, following streamssl[...] references."""
    project = PYPROJECT["project"]
    result = {canonical(r): r for r in project["dependencies"]}
    pending, seen = [extra], set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for requirement in project["optional-dependencies"][name]:
            if canonical(requirement) == "streamssl":
                pending += re.search(r"\[(.*)\]", requirement).group(1).split(",")  # type: ignore[union-attr]
            else:
                result[canonical(requirement)] = requirement
    return result


def installed_by(chain: list[Stage]) -> dict[str, str]:
    """What the pip commands of these stages leave in the venv: name -> the requirement as written."""
    packages: dict[str, str] = {}
    for stage in chain:
        for keyword, rest in stage.instructions:
            if keyword != "RUN":
                continue
            for command in rest.split("&&"):
                words = shlex.split(command)
                if len(words) < 2 or not words[0].endswith("/pip"):
                    continue
                action, args = words[1], words[2:]
                values = [
                    a for i, a in enumerate(args) if not a.startswith("-") and not (i and args[i - 1].endswith("-url"))
                ]
                for value in values:
                    if action == "uninstall":
                        packages.pop(canonical(value), None)
                    elif value.startswith(".["):
                        packages.update(extra_requirements(value[2:-1]))
                    elif action == "install":
                        packages[canonical(value)] = value
    return packages


def test_hadolint_finds_nothing() -> None:
    dockerfiles = sorted(str(p) for p in DOCKER.glob("*.Dockerfile"))
    assert len(dockerfiles) == 3, dockerfiles
    result = run([tool("hadolint"), "--config", str(DOCKER / "hadolint.yaml"), "--format", "tty", *dockerfiles])
    assert result.stdout.strip() == "", result.stdout


def test_hadolint_does_fail_on_a_bad_dockerfile(tmp_path: Path) -> None:
    """The linter and its threshold do bite: an untagged base, pip with a cache."""
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python\nRUN pip install streamssl\n")
    result = subprocess.run(
        [tool("hadolint"), "--config", str(DOCKER / "hadolint.yaml"), str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "DL3006" in result.stdout, result.stdout
    assert "DL3042" in result.stdout, result.stdout


@pytest.mark.parametrize(("dockerfile", "target", "extra", "swaps"), IMAGES)
def test_image_installs_exactly_its_extra(dockerfile: str, target: str, extra: str, swaps: dict[str, str]) -> None:
    all_stages = stages(dockerfile)
    final = all_stages[target]
    venv_from = [
        rest.split()[0].removeprefix("--from=") for kw, rest in final.instructions if kw == "COPY" and "--from=" in rest
    ]
    assert len(venv_from) == 1, f"{dockerfile} {target}: expected one COPY --from=<build stage> of the venv"
    packages = installed_by(lineage(all_stages, venv_from[0]))
    expected = extra_requirements(extra)
    for old, new in swaps.items():
        spec = expected.pop(old)
        assert packages.get(new, "").removeprefix(new) == spec.removeprefix(old), (
            f"{dockerfile} {target} must install {new} with {old}'s version range {spec!r}, got {packages.get(new)!r}"
        )
        expected[new] = packages[new]
    assert set(packages) == set(expected), (
        f"{dockerfile} --target {target}: installs {sorted(set(packages) - set(expected))} beyond the {extra} extra "
        f"and misses {sorted(set(expected) - set(packages))}"
    )


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_serving_image_has_no_torch(target: str) -> None:
    all_stages = stages("serving.Dockerfile")
    chain = [s for name, s in all_stages.items() if name.startswith("build-" + target)]
    packages = installed_by(chain)
    assert not {"torch", "torchvision", "onnx", "av"} & set(packages), sorted(packages)
    copied = {rest.split()[0] for s in chain for kw, rest in s.instructions if kw == "COPY"}
    assert "trainer" not in copied, "the serving image must not even carry the trainer's code"


@pytest.mark.parametrize(("dockerfile", "target", "extra", "swaps"), IMAGES)
def test_final_stage_is_non_root_health_checked_and_runs_its_command(
    dockerfile: str, target: str, extra: str, swaps: dict[str, str]
) -> None:
    all_stages = stages(dockerfile)
    assert len(all_stages) >= 2, f"{dockerfile} is not multi-stage"
    instructions = [i for stage in lineage(all_stages, target) for i in stage.instructions]
    users = [rest for kw, rest in instructions if kw == "USER"]
    assert users, f"{dockerfile} {target} has no USER"
    assert re.fullmatch(r"[1-9][0-9]{3,}:[1-9][0-9]{3,}", users[-1]), (
        f"{dockerfile} {target}: the last USER must be a numeric non-root uid:gid (runAsNonRoot checks numbers), "
        f"got {users}"
    )
    assert any(kw == "HEALTHCHECK" for kw, _ in instructions), f"{dockerfile} {target} has no HEALTHCHECK"
    entrypoint = [rest for kw, rest in instructions if kw == "ENTRYPOINT"][-1]
    command = COMMANDS["ingest" if extra == "ingest" else extra]
    assert entrypoint == f'["{command}"]'
    assert PYPROJECT["project"]["scripts"][command]
    env = " ".join(rest for kw, rest in instructions if kw == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "no .pyc writes at run time (read-only root filesystem)"
    assert "HOME=/tmp" in env, "caches go to /tmp, an emptyDir under a read-only root filesystem"
    ignore = DOCKER / f"{dockerfile}.dockerignore"
    assert ignore.is_file(), f"{ignore.name} keeps the build context to what the image installs"


@pytest.mark.parametrize("dockerfile", ["ingest.Dockerfile", "trainer.Dockerfile", "serving.Dockerfile"])
def test_default_command_flags_exist(dockerfile: str) -> None:
    """Every flag of a CMD is one the service's --help lists."""
    all_stages = stages(dockerfile)
    name = dockerfile.split(".")[0]
    command = COMMANDS[name]
    help_text = run([tool(command), "--help"]).stdout
    for stage in all_stages.values():
        for keyword, rest in stage.instructions:
            if keyword == "CMD":
                for flag in re.findall(r'"(--[a-z-]+)"', rest):
                    assert flag in help_text, f"{dockerfile}: {command} has no {flag}"
