"""The structure docs/architecture.md describes, checked on the code: the core has no import circle (counting
imports inside functions too), knows no modality, and no function in ``pipelines/`` runs past 60 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _internal_imports(path: Path, package: str) -> set[str]:
    """The ``package`` modules a file imports, anywhere in it (module level or inside a function)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                names = [node.module] if node.module else [a.name for a in node.names]
                found.update(f"{package}.{n.split('.')[0]}" for n in names)
            elif node.level == 0 and node.module and node.module.split(".")[0] == package:
                parts = node.module.split(".")
                found.update({f"{package}.{parts[1]}"} if len(parts) > 1 else
                             {f"{package}.{a.name}" for a in node.names})
        elif isinstance(node, ast.Import):
            found.update(".".join(a.name.split(".")[:2]) for a in node.names if a.name.startswith(package + "."))
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None
    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_core_has_no_import_circle_and_knows_no_modality():
    files = {f"zoo.{p.stem}": p for p in (ROOT / "zoo").glob("*.py") if p.stem != "__init__"}
    graph = {name: _internal_imports(path, "zoo") & set(files) for name, path in files.items()}
    assert _cycle(graph) is None, f"import circle in zoo/: {' -> '.join(_cycle(graph))}"
    for path in files.values():
        text = path.read_text()
        assert "import modalities" not in text and "from modalities" not in text, path
        assert "pipelines" not in _internal_imports(path, "pipelines"), path


def test_the_core_and_pipelines_import_no_circle_between_files():
    files = {f"pipelines.{p.stem}": p for p in (ROOT / "pipelines").glob("*.py") if p.stem != "__init__"}
    graph = {name: _internal_imports(path, "pipelines") & set(files) for name, path in files.items()}
    assert _cycle(graph) is None, f"import circle in pipelines/: {' -> '.join(_cycle(graph))}"


def test_no_function_in_pipelines_is_longer_than_60_lines():
    long = []
    for path in sorted((ROOT / "pipelines").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 60:
                    long.append(f"{path.name}:{node.name} ({n} lines)")
    assert not long, long


def test_list_and_help_import_neither_torch_nor_a_modality():
    """``zoo list``, ``zoo --help`` and a command's ``--help`` read entry points and recipe files only (issue
    #26: they answer in well under 1.5 s because torch and the modalities are never imported)."""
    import subprocess
    import sys
    code = ("import sys, contextlib, io\nfrom pipelines.cli import main\n"
            "for argv in (['list'], ['--help'], ['pretrain', '--help'], ['finetune', '--help']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "        try:\n            main(argv)\n        except SystemExit:\n            pass\n"
            "    assert out.getvalue(), argv\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('modalities.')))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", res.stdout


def test_every_installed_recipe_parses_and_validates():
    """Every recipe file an installed modality ships loads (YAML, sections, the modality's config classes)."""
    from pipelines.recipe import find_recipes, load_recipe
    recipes = find_recipes()
    assert len(recipes) >= 6
    for name in recipes:
        assert load_recipe(name).name == name
