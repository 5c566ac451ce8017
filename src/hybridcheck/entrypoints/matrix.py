"""``hybridcheck matrix``: the user's cases verified on each (flax, jax) release pair.

One uv environment per pair of :mod:`~hybridcheck.entrypoints.pairs` (kept in
``--envs``, reused while what it holds is unchanged, logs beside it) holds the
user's project and this hybridcheck; ``hybridcheck verify`` runs there. Table: a
row per pair (and axis), a column per case: pass / fails <invariant> / n/a /
timed out / cannot import: <upstream error>.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

from hybridcheck.entrypoints import pairs as _pairs

__all__ = ["Row", "select_rows", "nox_parametrize", "cell", "outcome", "table", "run"]

Say = Callable[[str], None]


class MatrixError(Exception):
    """Bad arguments or a missing tool: exit code 2, one line on stderr."""


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of the matrix: a (flax, jax) pair under a behaviour axis."""

    flax: str
    jax: str
    axis: str = "default"

    @property
    def label(self) -> str:
        axis = "" if self.axis == "default" else f" [{self.axis}]"
        return f"flax {self.flax} / jax {self.jax}{axis}"


_NAMED = {
    "newest": [_pairs.NEWEST],
    "oldest": [_pairs.OLDEST],
    "all": _pairs.COMPAT_PAIRS,
    "broken": _pairs.BROKEN_PAIRS,
}
_SPEC = re.compile(r"flax=(\d[\w.+!-]*),jax=(\d[\w.+!-]*)")


def select_rows(selection: Sequence[str], axes: Sequence[str] = ()) -> list[Row]:
    """Rows for ``--pairs`` words and ``--axis`` names, in order, without repeats.

    Words: ``newest`` (default), ``oldest``, ``all`` (every supported pair), ``broken``
    (known not to import), ``flax=X,jax=Y``. Each axis adds a row per pair (the same
    environment, the axis's variables set). Raises MatrixError on anything else.
    """
    pairs: list[tuple[str, str]] = []
    for word in selection or ["newest"]:
        if spec := _SPEC.fullmatch(word):
            pairs.append((spec[1], spec[2]))
        elif word in _NAMED:
            pairs += _NAMED[word]
        else:
            known = ", ".join(_NAMED)
            raise MatrixError(f"--pairs takes {known} or flax=X,jax=Y: {word!r}")
    if unknown := [a for a in axes if a not in _pairs.AXES]:
        known = ", ".join(_pairs.AXES)
        raise MatrixError(f"unknown axis {unknown[0]!r}; known: {known}")
    rows = [Row(f, j, a) for f, j in pairs for a in ("default", *axes)]
    return list(dict.fromkeys(rows))


def nox_parametrize(*selection: str) -> Any:
    """``nox.parametrize(("flax", "jax"), ...)`` over the pairs ``--pairs`` selects,
    for a user's noxfile (README "Use it in your CI"); install ``*pairs.pins(flax,
    jax)`` in the session. Ids read ``(flax='0.12.8', jax='0.10.2')`` as in ours."""
    import nox

    pairs = list(dict.fromkeys((r.flax, r.jax) for r in select_rows(selection)))
    ids = [f"flax='{f}', jax='{j}'" for f, j in pairs]
    return nox.parametrize(("flax", "jax"), pairs, ids=ids)


def cell(case: dict[str, Any]) -> str:
    """One case's verdict on one row, from its entry in verify's JSON report."""
    if case.get("error"):
        return "error: " + case["error"].strip().splitlines()[0][:160]
    if case.get("timed_out"):
        return "timed out: " + case["timed_out"].strip().splitlines()[0][:160]
    results = case.get("results", [])
    failed = [r["invariant"] for r in results if r["status"] == "failed"]
    if failed:
        return "fails " + ", ".join(failed)
    if results and all(r["status"] == "n/a" for r in results):
        return "n/a"
    return "pass"


def last_error_line(log: str) -> str:
    """A log's last ``SomethingError: ...`` without the path (else its last line)."""
    lines = log.strip().splitlines()
    for line in reversed(lines):
        found = re.search(r"\b\w*(?:Error|Exception)\b:? .*$", line)
        if found:
            return re.sub(r" \(/[^)]*\)", "", found.group(0)).strip()[:200]
    return lines[-1].strip()[:200] if lines else "no output"


def outcome(code: int, report: dict[str, Any] | None, log: str) -> dict[str, Any]:
    """A row's ``pass`` / ``fail`` / ``error`` (did not run) from verify's outcome."""
    # 3: nothing ran (n/a on this release); 2 and 4 leave no per-case verdict
    if report is None or code not in (0, 1, 3, 5):
        line = last_error_line(log)
        if code == 2 or line.startswith(("ImportError", "ModuleNotFoundError")):
            return {"status": "error", "error": f"cannot import: {line}"}
        return {"status": "error", "error": f"stopped (exit {code}): {line}"}
    cells = {c["case"]: cell(c) for c in report["cases"]}
    ok = code in (0, 3) and all(c in ("pass", "n/a") for c in cells.values())
    return {"status": "pass" if ok else "fail", "cells": cells, "report": report}


def table(rows: Sequence[tuple[Row, dict[str, Any]]], markdown: bool = False) -> str:
    """Rows = pairs, columns = cases; a row that did not run says why in a cell."""
    cases = list(dict.fromkeys(c for _, r in rows for c in r.get("cells", {})))
    header = ["pair", *(cases or ["cases"]), "seconds"]
    body = [header]
    for row, res in rows:
        cells = [res.get("cells", {}).get(c, "n/a") for c in cases]
        if "error" in res:
            cells = [res["error"]] + ["-"] * (max(len(cases), 1) - 1)
        body.append([row.label, *cells, f"{res.get('seconds', 0.0):.0f}"])
    if markdown:
        lines = ["| " + " | ".join(c.replace("|", "\\|") for c in b) for b in body]
        lines = [line + " |" for line in lines]
        return "\n".join([lines[0], "|" + "---|" * len(header), *lines[1:]]) + "\n"
    widths = [max(len(b[i]) for b in body) for i in range(len(header))]
    lines = ["  ".join(map(str.ljust, b, widths)).rstrip() for b in body]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]]) + "\n"


def _uv() -> list[str]:
    if exe := shutil.which("uv"):
        return [exe]
    if importlib.util.find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    raise MatrixError("hybridcheck matrix needs uv: pip install uv")


def _self_requirement() -> list[str]:
    """This hybridcheck as installed here (PEP 610: a checkout, editable; a git
    commit; a local wheel), else the same release from the index."""
    try:
        dist = importlib.metadata.distribution("hybridcheck")
        direct = json.loads(dist.read_text("direct_url.json") or "null")
    except importlib.metadata.PackageNotFoundError:  # a checkout on sys.path
        root = pathlib.Path(__file__).parents[3]  # src/hybridcheck/entrypoints/
        direct = {"url": root.as_uri(), "dir_info": {"editable": True}}
    if not direct:
        return [f"hybridcheck=={dist.version}"]
    if direct.get("dir_info", {}).get("editable"):
        return ["-e", urllib.parse.unquote(urllib.parse.urlparse(direct["url"]).path)]
    vcs = direct.get("vcs_info")
    at = f"@{vcs['commit_id']}" if vcs else ""
    return [f"hybridcheck @ {vcs['vcs'] + '+' if vcs else ''}{direct['url']}{at}"]


def _run_logged(cmd: list[str], log: pathlib.Path, say: Say, **kw: Any) -> int:
    """Runs ``cmd`` with its output appended to ``log``; relays verify's progress."""
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            if re.match(r"\[ *[\d.]+s\] ", line):  # "[  12.3s] case: ..."
                say("  " + line.rstrip())
        return proc.wait()


def _build(row: Row, env: pathlib.Path, project: pathlib.Path, say: Say) -> Any:
    """The pair's python (its environment made, updated or reused) or why not."""
    python = env / "venv" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    names = ("pyproject.toml", "setup.py", "setup.cfg")  # installable: else by path
    found = [project / n for n in names if (project / n).is_file()]
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in found)).hexdigest()
    wanted: dict[str, Any] = {
        "pins": _pairs.pins(row.flax, row.jax),
        "self": _self_requirement(),
        "project": ["-e", str(project)] if found else [],
        "project_files": digest,
        "python": sys.version,
    }
    stamp = env / "installed.json"
    if python.exists() and stamp.exists() and json.loads(stamp.read_text()) == wanted:
        say(f"{row.label}: environment reused ({env})")
        return python
    env.mkdir(parents=True, exist_ok=True)
    log, uv = env / "install.log", _uv()
    log.write_text("")
    say(f"{row.label}: installing (log: {log})")
    install = [*uv, "pip", "install", "--python", str(python), *wanted["pins"]]
    steps = [install + wanted["self"] + wanted["project"]]
    if not python.exists():
        steps.insert(0, [*uv, "venv", "--python", sys.executable, str(env / "venv")])
    for cmd in steps:
        if _run_logged(cmd, log, say) != 0:
            return "cannot install: " + last_error_line(log.read_text())
    stamp.write_text(json.dumps(wanted))
    return python


def _run_row(row: Row, envs: pathlib.Path, args: argparse.Namespace, say: Say) -> Any:
    env = envs / _pairs.pair_id(row.flax, row.jax)
    python = _build(row, env, args.project, say)
    if isinstance(python, str):
        return {"status": "error", "error": python}
    log, out = env / f"verify-{row.axis}.log", env / f"verify-{row.axis}.json"
    log.write_text("")
    out.unlink(missing_ok=True)
    cmd = [str(python), "-m", "hybridcheck", "verify", *args.targets]
    cmd += ["--profile", args.profile, "--json", str(out)]
    cmd += ["--progress"] if args.progress else ["--quiet"]
    variables = {**os.environ, **_pairs.AXES.get(row.axis, {})}
    variables["VIRTUAL_ENV"] = str(python.parents[1])
    code = _run_logged(cmd, log, say, cwd=args.project, env=variables)
    report = json.loads(out.read_text()) if out.exists() else None
    return outcome(code, report, log.read_text()) | {"log": str(log)}


def _absolute_target(target: str) -> str:
    """A file target made absolute: verify runs in the project's directory."""
    module, sep, name = target.rpartition(":")
    if not sep or not module or not name:
        raise MatrixError(f"TARGET must be 'file.py:NAME' or 'module:NAME': {target!r}")
    if module.endswith(".py") or "/" in module:
        if not pathlib.Path(module).is_file():
            raise MatrixError(f"no such file: {module}")
        module = str(pathlib.Path(module).resolve())
    return f"{module}:{name}"


def run(args: argparse.Namespace) -> int:
    """``hybridcheck matrix``: 0 every row passes, 1 a row failed or could not
    import or install, 2 bad arguments (or no uv)."""
    start = time.perf_counter()
    args.progress = args.progress or sys.stderr.isatty()

    def say(line: str) -> None:
        if args.progress:
            elapsed = time.perf_counter() - start
            print(f"[{elapsed:6.1f}s] {line}", file=sys.stderr, flush=True)

    try:  # a word with ':' after --pairs is a TARGET that followed it
        words = [*args.targets, *(w for w in args.pairs if ":" in w)]
        args.targets = [_absolute_target(w) for w in words]
        rows = select_rows([w for w in args.pairs if ":" not in w], args.axis)
        args.project = pathlib.Path(args.project).resolve()
        if not args.targets or not args.project.is_dir():
            raise MatrixError("needs a TARGET and an existing --project directory")
        _uv()
    except MatrixError as exc:
        print(f"hybridcheck: error: {exc}", file=sys.stderr)
        return 2
    envs = pathlib.Path(args.envs or args.project / ".hybridcheck-envs").resolve()
    envs.mkdir(parents=True, exist_ok=True)
    (envs / ".gitignore").write_text("*\n")  # 600 MB per pair: never committed
    results = []
    for n, row in enumerate(rows, 1):
        row_start = time.perf_counter()
        say(f"row {n}/{len(rows)}: {row.label}")
        res = _run_row(row, envs, args, say)
        res["seconds"] = time.perf_counter() - row_start
        say(f"{row.label}: {res['status']} in {res['seconds']:.1f} s")
        results.append((row, res))
    print(table(results), end="")
    ok = all(res["status"] == "pass" for _, res in results)
    if args.markdown:
        head = f"### hybridcheck matrix: {'passed' if ok else 'FAILED'}"
        head += f" ({args.profile} profile)\n\n"
        pathlib.Path(args.markdown).write_text(head + table(results, markdown=True))
    if args.json:
        data = [dataclasses.asdict(row) | res for row, res in results]
        text = json.dumps({"ok": ok, "profile": args.profile, "rows": data}, indent=2)
        pathlib.Path(args.json).write_text(text)
    return 0 if ok else 1
