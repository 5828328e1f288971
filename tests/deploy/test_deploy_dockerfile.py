"""deploy/docker/Dockerfile: multi-stage, installs exactly uv.lock, byte-compiled, non-root, serves the code
location; its ignore file lets in exactly what it copies."""

from __future__ import annotations

import fnmatch
import re
import shlex
from dataclasses import dataclass, field

import pytest

from . import schemas

DOCKER_DIR = schemas.DEPLOY_DIR / "docker"
DOCKERFILE = DOCKER_DIR / "Dockerfile"
DOCKERIGNORE = DOCKER_DIR / "Dockerfile.dockerignore"
CODE_DIRS = ("kernel", "ml", "platform_assets", "resources", "sensors", "checks", "webguard", "pipelines", "data")


@dataclass
class Instruction:
    keyword: str
    arguments: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [item.arguments for item in self.instructions if item.keyword == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with line continuations joined and comments dropped."""
    logical: list[str] = []
    buffer = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        logical.append(buffer + line)
        buffer = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        elif not stages:
            if keyword == "ARG" and "=" in rest:
                key, value = rest.split("=", 1)
                args[key.strip()] = value.strip()
        else:
            stages[-1].instructions.append(Instruction(keyword, rest.strip()))
    return args, stages


def resolve(reference: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), reference)


@pytest.fixture(scope="module")
def parsed() -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def test_is_multi_stage_with_a_builder_and_a_runtime(parsed: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = parsed
    names = [stage.name for stage in stages]
    assert "builder" in names and names[-1] == "runtime"
    assert len(stages) >= 2


def test_base_images_are_pinned_python_3_11_slim(parsed: tuple[dict[str, str], list[Stage]]) -> None:
    args, stages = parsed
    python_image = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?", python_image), python_image
    builder = next(stage for stage in stages if stage.name == "builder")
    assert resolve(builder.base, args) == resolve(stages[-1].base, args) == python_image
    for stage in stages:
        image = resolve(stage.base, args)
        assert not image.endswith(":latest") and ":" in image.rsplit("/", 1)[-1], image
    assert re.fullmatch(r"ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+", args["UV_IMAGE"])


def test_builder_installs_dependencies_from_the_lock_before_the_code(
    parsed: tuple[dict[str, str], list[Stage]],
) -> None:
    _, stages = parsed
    builder = next(stage for stage in stages if stage.name == "builder")
    steps = builder.instructions
    lock_copy = next(i for i, s in enumerate(steps) if s.keyword == "COPY" and "uv.lock" in s.arguments.split())
    syncs = [i for i, s in enumerate(steps) if s.keyword == "RUN" and "uv sync" in s.arguments]
    code_copies = [i for i, s in enumerate(steps) if s.keyword == "COPY" and s.arguments.split()[0] in CODE_DIRS]
    assert len(syncs) == 2, "one dependencies-only sync, one project sync"
    deps_sync, project_sync = (steps[i].arguments for i in syncs)
    assert lock_copy < syncs[0] < min(code_copies) <= max(code_copies) < syncs[1]
    for command in (deps_sync, project_sync):
        assert re.search(r"--(frozen|locked)\b", command), command
        assert "--no-dev" in command, command
    assert "--no-install-project" in deps_sync
    assert "--no-install-project" not in project_sync
    assert "pyproject.toml" in steps[lock_copy].arguments


def test_bytecode_is_compiled_at_install_time(parsed: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = parsed
    builder = next(stage for stage in stages if stage.name == "builder")
    env = " ".join(builder.all("ENV"))
    assert re.search(r"\bUV_COMPILE_BYTECODE=1\b", env)


def test_nothing_is_pip_installed_unpinned(parsed: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = parsed
    for stage in stages:
        for command in stage.all("RUN"):
            for match in re.finditer(r"pip3? install ([^&;|]+)", command):
                packages = [t for t in shlex.split(match.group(1)) if not t.startswith("-")]
                assert all("==" in package for package in packages), command


def test_runtime_is_non_root_without_build_tools(parsed: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = parsed
    runtime = stages[-1]
    users = runtime.all("USER")
    assert users, "runtime stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users[-1]
    last_user = max(i for i, s in enumerate(runtime.instructions) if s.keyword == "USER")
    assert all(s.keyword != "RUN" for s in runtime.instructions[last_user:]), "RUN after USER"
    copies_from = [c for c in runtime.all("COPY") if c.startswith("--from=")]
    assert copies_from and all(c.startswith("--from=builder") for c in copies_from), copies_from
    assert not any("uv sync" in command or "pip install" in command for command in runtime.all("RUN"))


def test_serves_the_code_location_on_4000(parsed: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = parsed
    runtime = stages[-1]
    assert runtime.all("EXPOSE") == ["4000"]
    assert not runtime.all("ENTRYPOINT"), "the chart and KubeRay pass full commands as args"
    (cmd,) = runtime.all("CMD")
    assert "platform_assets.definitions" in cmd and '"4000"' in cmd and '"dagster"' in cmd
    env = " ".join(runtime.all("ENV"))
    assert "/app/.venv/bin" in env


def _ignore_patterns() -> list[tuple[bool, str]]:
    rules = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), line.lstrip("!").rstrip("/")))
    return rules


def _included(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern on a parent directory covers its files."""
    included = True
    for negated, pattern in _ignore_patterns():
        candidates = [path] + ["/".join(path.split("/")[: i + 1]) for i in range(path.count("/"))]
        if any(fnmatch.fnmatch(candidate, pattern) for candidate in candidates):
            included = negated
    return included


def test_everything_copied_exists_and_is_let_in_by_the_ignore_file(
    parsed: tuple[dict[str, str], list[Stage]],
) -> None:
    _, stages = parsed
    sources = []
    for stage in stages:
        for copy in stage.all("COPY"):
            tokens = [t for t in copy.split() if not t.startswith("--")]
            if any(t.startswith("--from=") for t in copy.split()):
                continue
            sources += tokens[:-1]
    assert set(CODE_DIRS) <= set(sources) and {"pyproject.toml", "uv.lock", "README.md"} <= set(sources)
    for source in sources:
        assert (schemas.REPO_ROOT / source).exists(), f"COPY source {source} missing from the repository"
        assert _included(source), f"{source} is excluded by {DOCKERIGNORE.name}"
    for unwanted in (".venv/bin/python", ".git/HEAD", "tests/deploy/schemas.py", "deploy/helm/values.yaml"):
        assert not _included(unwanted), unwanted
    assert not _included("platform_assets/__pycache__/x.pyc")


def test_documents_commit_tags_and_the_build_context() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "IMAGE_TAG=$(git rev-parse --short HEAD)" in text
    assert "docker build -f deploy/docker/Dockerfile" in text
    readme = (schemas.DEPLOY_DIR / "README.md").read_text(encoding="utf-8")
    assert "IMAGE_TAG=$(git rev-parse --short HEAD)" in readme
    assert "kind load docker-image ml-asset-platform:${IMAGE_TAG}" in readme


def test_lock_is_present_and_describes_this_project() -> None:
    lock = (schemas.REPO_ROOT / "uv.lock").read_text(encoding="utf-8")
    pyproject = (schemas.REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    name = re.search(r'^name = "([^"]+)"', pyproject, flags=re.M)
    assert name and f'name = "{name.group(1)}"' in lock
