"""Build code-completion chat prompts from the Python standard library, as drafter training data for code.

    python scripts/make_code_prompts.py --output runs/regen/stdlib-code-prompts.jsonl --max-samples 2500
    python scripts/make_code_prompts.py --packages networkx sympy mpmath --output runs/regen/pkg-code-prompts.jsonl
    coral-hf regenerate --data runs/regen/stdlib-code-prompts.jsonl --max-turns 1 --batch-size 128 \
      --max-new-tokens 256 --output runs/regen/stdlib-code-greedy.jsonl

The shipped drafter learnt from chat only and accepts least on code (HumanEval). Code prompts that no benchmark uses
come from the interpreter's own standard library, which is on every machine: each public function or method with a
docstring becomes a stub (its signature and docstring, the body removed) asked for in the same words as the
`humaneval` prompt set ("Complete the following Python function: ..."); the original body is kept as the assistant
turn, so the file is also a valid chat dataset before `coral-hf regenerate` replaces it with the target's answer.
Test suites, private names and stubs longer than `--max-stub-lines` are skipped; the order is shuffled with `--seed`
so any prefix mixes modules. `--packages` reads installed packages instead (located without importing them): the
algorithm libraries that come with the dependencies (networkx, sympy, mpmath) add thousands of small, documented
functions of the kind HumanEval asks for.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import random
import sysconfig
import textwrap
from collections.abc import Iterator
from pathlib import Path

INSTRUCTION = "Complete the following Python function:\n```python\n{stub}```"
SKIPPED_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "__pycache__", "turtledemo", "ensurepip"}


def iter_stubs(source: str, max_stub_lines: int, max_body_lines: int) -> Iterator[tuple[str, str, str]]:
    """(qualified name, stub, body) of every public function or method of one module that has a docstring."""
    tree = ast.parse(source)
    lines = source.splitlines()

    def visit(node: ast.AST, prefix: str) -> Iterator[tuple[str, str, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef) and not child.name.startswith("_"):
                yield from visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) and not child.name.startswith("_"):
                docstring = ast.get_docstring(child)
                if not docstring or len(docstring) < 40 or len(child.body) < 2:
                    continue
                function = textwrap.dedent("\n".join(lines[child.lineno - 1 : child.end_lineno])).splitlines()
                stub_lines = child.body[0].end_lineno - child.lineno + 1
                stub = "\n".join(function[:stub_lines]) + "\n"
                body = "\n".join(function[stub_lines:]).strip("\n")
                if stub.count("\n") <= max_stub_lines and 0 < body.count("\n") + 1 <= max_body_lines:
                    yield f"{prefix}{child.name}", stub, body

    yield from visit(tree, "")


def package_root(name: str) -> Path:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"error: {name!r} is not an installed package")
    return Path(next(iter(spec.submodule_search_locations)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="JSONL file of {id, messages} records to write.")
    parser.add_argument("--max-samples", type=int, default=2500, help="Stubs to keep after shuffling.")
    parser.add_argument("--max-stub-lines", type=int, default=30, help="Skip longer signature + docstring stubs.")
    parser.add_argument("--max-body-lines", type=int, default=40, help="Skip functions with longer bodies.")
    parser.add_argument(
        "--packages", nargs="+", default=None, help="Installed packages to read instead of the standard library."
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    roots = [(Path(sysconfig.get_paths()["stdlib"]), "stdlib", "")]
    if args.packages:
        roots = [(package_root(name), name, f"{name}.") for name in args.packages]
    records, seen = [], set()
    for root, source, module_prefix in roots:
        for path in sorted(root.rglob("*.py")):
            if SKIPPED_DIRS.intersection(path.relative_to(root).parts[:-1]) or path.name.startswith("test_"):
                continue
            module = module_prefix + ".".join(path.relative_to(root).with_suffix("").parts)
            try:
                stubs = list(iter_stubs(path.read_text(encoding="utf-8"), args.max_stub_lines, args.max_body_lines))
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue  # a few files are templates or deliberately invalid
            for name, stub, body in stubs:
                if stub in seen:
                    continue
                seen.add(stub)
                records.append((f"{source}:{module}.{name}", stub, body))
    random.Random(args.seed).shuffle(records)
    records = records[: args.max_samples]

    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("w", encoding="utf-8") as handle:
        for index, (name, stub, body) in enumerate(records):
            messages = [
                {"role": "user", "content": INSTRUCTION.format(stub=stub)},
                {"role": "assistant", "content": f"```python\n{stub}{body}\n```"},
            ]
            handle.write(json.dumps({"id": index, "source": name, "messages": messages}) + "\n")
    sources = ", ".join(str(root) for root, _, _ in roots)
    print(f"wrote {len(records)} prompts from {sources} to {args.output} ({len(seen)} distinct stubs found)")


if __name__ == "__main__":
    main()
