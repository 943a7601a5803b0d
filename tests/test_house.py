"""The repository's structure: imports run one way, and every citation of the project's facts can be followed."""

from __future__ import annotations

import ast
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Each layer may import only the layers after it: experiments -> lightning_modules -> datamodules, stylegan2_ops.
LAYERS = ("experiments", "lightning_modules", "datamodules", "stylegan2_ops")
FORBIDDEN = {
    "experiments": (),
    "lightning_modules": ("experiments",),
    "datamodules": ("experiments", "lightning_modules"),
    "stylegan2_ops": ("experiments", "lightning_modules", "datamodules"),
}


def tracked_files() -> list[Path]:
    """The files git tracks (what a reader of the repository sees)."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_importing_datamodules_loads_no_lightning_module():
    modules = sorted(m.name for m in pkgutil.walk_packages([str(ROOT / "datamodules")], prefix="datamodules."))
    assert "datamodules.vggsound" in modules and "datamodules.edit_pairs" in modules
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning_modules', 'experiments')))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"importing datamodules loaded: {result.stdout.strip()}"


def test_no_module_imports_a_layer_above_it():
    wrong = []
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                wrong += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names
                          if n.split(".")[0] in FORBIDDEN[layer]]
    assert not wrong, "\n".join(wrong)


def test_facts_are_cited_from_the_projects_own_reference():
    """No file cites the external note; every 'docs/reference.md §<name>' names a section that exists there."""
    external = re.compile("REFERENCE" + r"(\s*§|\.md)")
    reference = ROOT / "docs" / "reference.md"
    anchors = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', reference.read_text(encoding="utf-8")))
    assert {"eq1", "eq2", "generator", "ops", "checkpoints", "allocator"} <= anchors
    bad, cited = [], set()
    for path in tracked_files():
        if not path.is_file() or path.suffix in {".png", ".pt", ".npy", ".gif", ".jpg", ".wav", ".flac"}:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        name = path.relative_to(ROOT)
        bad += [f"{name}: {m.group(0)!r}" for m in external.finditer(text)]
        for section in re.findall(r"docs/reference\.md §([a-z0-9-]+)", text):
            cited.add(section)
            if section not in anchors:
                bad.append(f"{name}: cites missing section §{section}")
    assert not bad, "\n".join(bad)
    assert cited, "nothing cites docs/reference.md: the citations were lost"
