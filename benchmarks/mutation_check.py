"""Mutation check of the numeric core: do the fast tests catch small deliberate bugs?

Each mutant is one small change of one line in one module of the numeric core (pose/,
detection/postprocess.py, skeleton.py, io/image_checks.py, tracking/): an arithmetic or
comparison operator swapped, a number nudged, `and`/`or` swapped, a condition negated,
a pair of literal numbers swapped (the flip-order kind of bug). The module's own fast
tests (MODULE_TESTS) run against it in a copy of src/; a failing test run "kills" the
mutant. Mutants that survive are listed with their line, to be judged: an equivalent
mutant (same behaviour, e.g. `<` for `<=` on values that never tie) or a missing test.

    python benchmarks/mutation_check.py                  # a seeded sample of 60 mutants
    python benchmarks/mutation_check.py --count 0        # every mutant (slow: hours)
    python benchmarks/mutation_check.py --module pose/postprocess.py --count 20
    python benchmarks/mutation_check.py --list           # the mutants, without running tests

Not run in CI: a sample takes tens of minutes on two cores. Set MSPN_TEST_CACHE as for the
suite. Writes benchmarks/mutation_results.json (score and survivors) unless --out is given.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, List

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "mspn_cli"

_POSE_TESTS = ["tests/unit/test_pose_processing.py", "tests/unit/test_official_arithmetic.py",
               "tests/unit/test_spec_constants.py", "tests/unit/test_oracle.py", "tests/unit/test_lazy_crops.py",
               "tests/unit/test_keypoint_confidence.py"]
_TRACKING_TESTS = ["tests/unit/test_tracking.py", "tests/unit/test_tracking_offline.py", "tests/unit/test_smoothing.py",
                   "tests/unit/test_video.py"]
# Module (relative to src/mspn_cli) -> the fast tests that guard it.
MODULE_TESTS = {
    "pose/preprocess.py": _POSE_TESTS,
    "pose/postprocess.py": _POSE_TESTS,
    "pose/estimator.py": _POSE_TESTS + ["tests/unit/test_hot_path.py"],
    "pose/result.py": _POSE_TESTS + ["tests/unit/test_visualize.py", "tests/unit/test_evaluation.py"],
    "detection/postprocess.py": ["tests/unit/test_detection_postprocess.py", "tests/unit/test_detection_candidates.py",
                                 "tests/unit/test_detections.py", "tests/unit/test_spec_constants.py"],
    "skeleton.py": ["tests/unit/test_spec_constants.py", "tests/unit/test_pose_processing.py",
                    "tests/unit/test_visualize.py", "tests/unit/test_tracking.py", "tests/unit/test_oracle.py"],
    "io/image_checks.py": ["tests/unit/test_image_checks.py", "tests/cli/test_truncated_inputs.py"],
    **{f"tracking/{name}": _TRACKING_TESTS for name in (
        "assignment.py", "gaps.py", "geometry.py", "kalman.py", "results.py", "retrack.py", "smoothing.py",
        "tracker.py", "__init__.py")},
}

_SWAP_BINOP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult,
               ast.Pow: ast.Mult, ast.Mod: ast.FloorDiv}
_SWAP_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
             ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}


@dataclass
class Mutant:
    module: str
    line: int
    kind: str
    before: str
    after: str
    index: int  # the index-th mutation site of the module, in AST walk order
    outcome: str = ""
    seconds: float = 0.0


def _docstring_nodes(tree: ast.AST) -> set:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _sites(tree: ast.AST) -> Iterator[tuple]:
    """(node, kind, apply) for each mutation site; apply(node) changes the node in place."""
    skip = _docstring_nodes(tree)
    annotations = {id(n) for a in ast.walk(tree) for ann in _annotations(a) for n in ast.walk(ann)}
    for node in ast.walk(tree):
        if id(node) in annotations:
            continue
        if isinstance(node, ast.BinOp) and type(node.op) in _SWAP_BINOP:
            yield node, "operator", lambda n: setattr(n, "op", _SWAP_BINOP[type(n.op)]())
        elif isinstance(node, ast.Compare):
            for position, op in enumerate(node.ops):
                if type(op) in _SWAP_CMP:
                    yield node, "comparison", (lambda p: lambda n: n.ops.__setitem__(p, _SWAP_CMP[type(n.ops[p])]()))(position)
        elif isinstance(node, ast.BoolOp):
            yield node, "boolean", lambda n: setattr(n, "op", ast.Or() if isinstance(n.op, ast.And) else ast.And())
        elif isinstance(node, (ast.If, ast.While)) and not _is_main_guard(node):
            yield node, "negated condition", lambda n: setattr(n, "test", ast.UnaryOp(ast.Not(), n.test))
        elif isinstance(node, ast.Constant) and id(node) not in skip and type(node.value) in (int, float):
            yield node, "number", lambda n: setattr(n, "value", _nudge(n.value))
        elif isinstance(node, (ast.Tuple, ast.List)) and _swappable_numbers(node):
            yield node, "swapped pair", _swap_pair


def _annotations(node: ast.AST) -> list:
    found = []
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        found += [a.annotation for a in node.args.args + node.args.kwonlyargs if a.annotation is not None]
        if node.returns is not None:
            found.append(node.returns)
    elif isinstance(node, ast.AnnAssign):
        found.append(node.annotation)
    return found


def _is_main_guard(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "__name__" in ast.unparse(node.test)


def _nudge(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    return value * 1.5 if value else 1.0


def _swappable_numbers(node) -> bool:
    numbers = [e for e in node.elts if isinstance(e, ast.Constant) and type(e.value) in (int, float)]
    return len(numbers) >= 4 and len(numbers) == len(node.elts) and len({e.value for e in numbers}) > 1


def _swap_pair(node) -> None:
    """Swap the middle pair of distinct neighbours (a literal table's transposed entries)."""
    elts = node.elts
    candidates = [i for i in range(len(elts) - 1) if elts[i].value != elts[i + 1].value]
    i = candidates[len(candidates) // 2]
    elts[i], elts[i + 1] = elts[i + 1], elts[i]


def _changed_line(before: str, after: str) -> tuple:
    """The first line that differs between two renderings of a node (so a survivor can be found)."""
    for old, new in zip(before.splitlines(), after.splitlines()):
        if old != new:
            return old.strip()[:120], new.strip()[:120]
    return before.strip()[:120], after.strip()[:120]


def enumerate_mutants(module: str) -> List[Mutant]:
    source = (PACKAGE / module).read_text()
    tree = ast.parse(source)
    mutants = []
    for index, (node, kind, apply) in enumerate(_sites(tree)):
        statement = _enclosing_statement(tree, node)
        before = ast.unparse(statement)
        mutated_tree = copy.deepcopy(statement)
        target = next(n for n, original in zip(ast.walk(mutated_tree), ast.walk(statement)) if original is node)
        apply(target)
        old, new = _changed_line(before, ast.unparse(mutated_tree))
        mutants.append(Mutant(module, node.lineno, kind, old, new, index))
    return mutants


def _enclosing_statement(tree: ast.AST, node: ast.AST) -> ast.AST:
    """The innermost statement holding `node` (the node itself when it is one)."""
    best = node
    for candidate in ast.walk(tree):
        if isinstance(candidate, ast.stmt) and not isinstance(candidate, (ast.FunctionDef, ast.ClassDef, ast.If,
                                                                            ast.While, ast.For, ast.With, ast.Try)):
            if any(child is node for child in ast.walk(candidate)):
                best = candidate
    return best if best is not node or isinstance(node, ast.stmt) else node


def mutated_source(mutant: Mutant) -> str:
    tree = ast.parse((PACKAGE / mutant.module).read_text())
    node, _, apply = list(_sites(tree))[mutant.index]
    apply(node)
    return ast.unparse(ast.fix_missing_locations(tree))


def run_mutant(mutant: Mutant, workdir: Path, timeout: float) -> Mutant:
    target = workdir / "src" / "mspn_cli" / mutant.module
    original = target.read_text()
    target.write_text(mutated_source(mutant))
    env = dict(os.environ, PYTHONPATH=str(workdir / "src"), PYTHONDONTWRITEBYTECODE="1")
    env.setdefault("MSPN_TEST_CACHE", str(REPO / ".mspn_test_cache"))
    started = time.monotonic()
    # Its own session, so a timeout ends the `mspn` children of the tests too (they hold the pipes).
    child = subprocess.Popen([sys.executable, "-m", "pytest", "-x", "-q", "-m", "not slow", "-p", "no:cacheprovider",
                              "-W", "ignore", *MODULE_TESTS[mutant.module]],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    try:
        output, _ = child.communicate(timeout=timeout)
        proc = subprocess.CompletedProcess(child.args, child.returncode, output, "")
        # 1: a test failed; 2: collection failed (the mutant breaks an import): both kill it.
        mutant.outcome = {0: "survived", 1: "killed", 2: "killed (collection)"}.get(
            proc.returncode, f"error (pytest exit {proc.returncode})")
        if proc.returncode not in (0, 1, 2):
            mutant.outcome += ": " + (proc.stdout + proc.stderr).strip().splitlines()[-1][:200]
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        mutant.outcome = "killed (timeout)"
    finally:
        target.write_text(original)
    mutant.seconds = round(time.monotonic() - started, 1)
    return mutant


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=60, help="mutants to run, sampled with --seed (0: all)")
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--module", action="append", help="only this module (relative to src/mspn_cli); repeatable")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per mutant; a timeout counts as killed")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "mutation_results.json")
    args = parser.parse_args()

    modules = args.module or sorted(MODULE_TESTS)
    unknown = [m for m in modules if m not in MODULE_TESTS]
    if unknown:
        parser.error(f"no tests mapped for {unknown}; known: {sorted(MODULE_TESTS)}")
    mutants = [m for module in modules for m in enumerate_mutants(module)]
    if args.count and args.count < len(mutants):
        mutants = sorted(random.Random(args.seed).sample(mutants, args.count), key=lambda m: (m.module, m.index))
    if args.list:
        for m in mutants:
            print(f"{m.module}:{m.line} {m.kind}: {m.before}  ->  {m.after}")
        return 0

    with tempfile.TemporaryDirectory(prefix="mspn-mutants-") as tmp:
        workdir = Path(tmp)
        shutil.copytree(REPO / "src", workdir / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        for number, mutant in enumerate(mutants, start=1):
            run_mutant(mutant, workdir, args.timeout)
            print(f"[{number}/{len(mutants)}] {mutant.outcome:>8}  {mutant.module}:{mutant.line} {mutant.kind}: "
                  f"{mutant.before}  ->  {mutant.after}  ({mutant.seconds} s)", flush=True)
    killed = sum(m.outcome.startswith("killed") for m in mutants)
    errors = [m for m in mutants if m.outcome.startswith("error")]
    survivors = [m for m in mutants if m.outcome == "survived"]
    scored = len(mutants) - len(errors)
    score = killed / scored if scored else 0.0
    print(f"\nkilled {killed} of {scored} mutants: {score:.0%}" + (f" ({len(errors)} could not run)" if errors else ""))
    for m in survivors:
        print(f"  survived: {m.module}:{m.line} {m.kind}: {m.before}  ->  {m.after}")
    args.out.write_text(json.dumps({"score": score, "killed": killed, "scored": scored,
                                    "mutants": [asdict(m) for m in mutants]}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
