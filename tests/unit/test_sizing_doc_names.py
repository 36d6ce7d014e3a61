"""The sizing modules' comments and docstrings name a function or constant of another sizing
module by the module it is in: `module.name` or "module.py NAME" names one that module
defines, and a bare name is defined or imported where it is written. A move between modules
(moekernels moved vLLM's MoE rules out of performance.py) leaves a reference at the old place
otherwise, which reads as a name that is not there."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

import llmdeploy.sizing

PACKAGE = Path(llmdeploy.sizing.__file__).parent
MODULES = {path.stem: path for path in sorted(PACKAGE.glob("*.py")) if path.stem != "__init__"}
QUALIFIED = re.compile(r"\b([a-z_]+)(?:\.py \(?`?|\.)([A-Za-z_]\w*)")
# A name with an underscore, backticked or not, not itself after a dot.
BARE = re.compile(r"(?<![\w.])`?([A-Za-z_]\w*_\w*)")


def _defined(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _imported(tree: ast.Module) -> set[str]:
    return {
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


def _prose(path: Path, tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, text) of every docstring and run of comment lines, each joined into one line so
    that a reference broken over two lines is read whole."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc is not None:
                yield getattr(node, "lineno", 1), " ".join(doc.split())
    comments: list[tuple[int, str]] = []
    source = path.read_text()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments.append((token.start[0], token.string.lstrip("# ")))
    run: list[tuple[int, str]] = []
    for line, text in comments:
        if run and line != run[-1][0] + 1:
            yield run[0][0], " ".join(t for _, t in run)
            run = []
        run.append((line, text))
    if run:
        yield run[0][0], " ".join(t for _, t in run)


def _misnamed(modules: dict[str, Path]) -> list[str]:
    trees = {name: ast.parse(path.read_text()) for name, path in modules.items()}
    defined = {name: _defined(tree) for name, tree in trees.items()}
    owners: dict[str, set[str]] = {}
    for module, names in defined.items():
        for name in names - set(modules):
            owners.setdefault(name, set()).add(module)
    wrong = []
    for module, path in modules.items():
        here = defined[module] | _imported(trees[module])
        for line, text in _prose(path, trees[module]):
            for named, name in QUALIFIED.findall(text):
                if named in modules and name in owners and name not in defined[named]:
                    wrong.append(f"{path.name}:{line}: {named}.{name} is in {sorted(owners[name])}")
            qualified = {name for _, name in QUALIFIED.findall(text)}
            for name in BARE.findall(text):
                if name in owners and name not in here and name not in qualified:
                    wrong.append(f"{path.name}:{line}: {name} is in {sorted(owners[name])}")
    return wrong


def test_a_sizing_docstring_names_another_modules_function_where_it_is() -> None:
    assert _misnamed(MODULES) == []


def test_the_check_sees_a_name_left_at_its_old_module(tmp_path: Path) -> None:
    """It fails on a reference to the old place of a moved function, and on a bare name
    defined in another module and not imported."""
    memory = tmp_path / "memory.py"
    memory.write_text(
        MODULES["memory"].read_text() + "\n# performance.kept_expert_share; `_native_fp4`\n"
    )
    wrong = _misnamed({**MODULES, "memory": memory})
    assert any("performance.kept_expert_share is in ['moe_kernels']" in w for w in wrong)
    assert any("_native_fp4 is in ['performance']" in w for w in wrong)
