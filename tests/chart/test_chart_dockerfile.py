"""The Dockerfile, linted (hadolint) and checked without a Docker engine: its stages, its
non-root runtime, and its dependency-caching recipe run for real on this workspace."""

import json
import os
import re
import shutil
import subprocess

import pytest

from chartlib import ROOT, run, tool

DOCKERFILE = ROOT / "Dockerfile"
TEXT = DOCKERFILE.read_text()


def hadolint() -> str:
    venv = ROOT / ".tools" / "venv" / "bin" / "hadolint"
    return str(venv) if venv.is_file() else tool("hadolint")


def test_hadolint_is_clean():
    proc = run([hadolint(), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_stages_and_runtime():
    froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", TEXT, re.M)
    assert [alias for _, alias in froms] == ["planner", "builder", ""]
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", TEXT, re.M))
    assert args["RUST_IMAGE"] == "rust:1-bookworm"
    assert args["RUNTIME_IMAGE"] == "gcr.io/distroless/cc-debian12:nonroot"
    assert "cargo build --release --locked -p rollcall" in TEXT
    runtime = TEXT[TEXT.rindex("\nFROM "):]
    assert re.search(r"^USER\s+65532:65532$", runtime, re.M), "non-root numeric user (runAsNonRoot can check it)"
    assert re.search(r"^EXPOSE\s+8000$", runtime, re.M)
    assert re.search(r'^ENTRYPOINT \["/usr/local/bin/rollcall"\]$', runtime, re.M)
    assert "COPY --from=builder /out/rollcall /usr/local/bin/rollcall" in runtime


def test_dockerignore_keeps_the_context_to_the_workspace():
    lines = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert lines[0] == "**", "allow-list: everything out, then the workspace back in"
    for keep in ("!Cargo.toml", "!Cargo.lock", "!crates/**", "!tests/**"):
        assert keep in lines
    assert "**/target" in lines
    # Every directory the Dockerfile copies is allowed back in.
    for src in re.findall(r"^COPY (?!--)(\S+) ", TEXT, re.M):
        assert f"!{src}" in lines or f"!{src}/**" in lines, src


def _planner_script() -> str:
    block = re.search(r"AS planner\n(.*?)\n\n", TEXT, re.S).group(1)
    run_cmd = block[block.index("\nRUN ") + 5:]
    return run_cmd.replace("\\\n", "")


def test_dependency_recipe_builds_a_valid_workspace(tmp_path):
    """Runs the planner stage's script on a copy of the workspace, then checks with cargo that the
    stubbed recipe is a workspace cargo can resolve from Cargo.lock (what the cached layer builds)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("Cargo.toml", "Cargo.lock"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("target", "node_modules", "__pycache__", ".pytest_cache")
    for d in ("crates", "tests"):
        shutil.copytree(ROOT / d, src / d, ignore=ignore)
    recipe = tmp_path / "recipe"
    script = _planner_script().replace("/recipe", str(recipe))
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", script], cwd=src, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr

    # Only manifests, the lock file and stub crate roots.
    for path in recipe.rglob("*"):
        if path.is_file() and path.name not in ("Cargo.toml", "Cargo.lock"):
            assert path.suffix == ".rs" and path.read_text() in ("", "fn main() {}\n"), path
    assert (recipe / "crates/rollcall/src/main.rs").read_text() == "fn main() {}\n"

    cargo = shutil.which("cargo") or pytest.fail("cargo not on PATH")
    env = {**os.environ, "CARGO_TARGET_DIR": str(tmp_path / "target")}
    meta = subprocess.run([cargo, "metadata", "--no-deps", "--locked", "--offline", "--format-version", "1"],
                          cwd=recipe, capture_output=True, text=True, env=env, timeout=120)
    assert meta.returncode == 0, meta.stderr
    members = {p["name"] for p in json.loads(meta.stdout)["packages"]}
    assert "rollcall" in members
    tree = subprocess.run([cargo, "tree", "--locked", "--offline", "-p", "rollcall", "-e", "normal,build",
                           "--prefix", "none"], cwd=recipe, capture_output=True, text=True, env=env, timeout=120)
    assert tree.returncode == 0, f"Cargo.lock does not resolve for the recipe (offline):\n{tree.stderr}"
