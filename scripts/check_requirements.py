#!/usr/bin/env python3
"""Checks that every requirement of the spec is traced in code, in tests and in docs/requirements.md.

Every SRS_ASYNC_SOCKET_WIN32_... id must have
  - a `Codes_<id>` marker in include/ (beside the code that does it),
  - a `Tests_<id>` marker in tests/ (beside a test that checks it),
  - a row in docs/requirements.md whose "coded in" and "tested in" cells name exactly the files that
    hold those markers.
The list of ids comes from the spec (../shared/spec/async_socket_win32_requirements.md) when it is
there, and from docs/requirements.md otherwise; when both are there they must agree.

  scripts/check_requirements.py           check; exit 1 and list every problem on failure
  scripts/check_requirements.py --update  rewrite the "coded in"/"tested in" cells from the markers
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPEC = ROOT.parent / "shared" / "spec" / "async_socket_win32_requirements.md"
DOC = ROOT / "docs" / "requirements.md"
ID = re.compile(r"SRS_ASYNC_SOCKET_WIN32_\d+_\d+")
ROW = re.compile(r"^\|\s*(SRS_ASYNC_SOCKET_WIN32_\d+_\d+)\s*\|([^|]*)\|([^|]*)\|([^|]*)\|\s*$")
SOURCE_SUFFIXES = {".h", ".hpp", ".cpp", ".c"}


def markers(folder: str, prefix: str) -> dict:
    """Maps each id to the sorted files under `folder` that carry `prefix + id`."""
    found: dict = {}
    pattern = re.compile(re.escape(prefix) + r"(SRS_ASYNC_SOCKET_WIN32_\d+_\d+)")
    for path in sorted((ROOT / folder).rglob("*")):
        if path.suffix not in SOURCE_SUFFIXES or not path.is_file():
            continue
        relative = path.relative_to(ROOT).as_posix()
        for match in pattern.finditer(path.read_text(encoding="utf-8", errors="replace")):
            found.setdefault(match.group(1), set()).add(relative)
    return {key: sorted(value) for key, value in found.items()}


def cell(files: list) -> str:
    return " ".join(f"`{name}`" for name in files) if files else "—"


def main() -> int:
    update = "--update" in sys.argv[1:]
    problems = []

    doc_lines = DOC.read_text(encoding="utf-8").splitlines()
    doc_rows = {}
    for number, line in enumerate(doc_lines):
        match = ROW.match(line)
        if match:
            doc_rows[match.group(1)] = number

    if SPEC.is_file():
        ids = sorted(set(ID.findall(SPEC.read_text(encoding="utf-8"))))
        for missing in sorted(set(ids) - set(doc_rows)):
            problems.append(f"{missing}: in the spec but has no row in docs/requirements.md")
        for extra in sorted(set(doc_rows) - set(ids)):
            problems.append(f"{extra}: has a row in docs/requirements.md but is not in the spec")
    else:
        ids = sorted(doc_rows)
        print(f"check_requirements: {SPEC} not found; using the ids of docs/requirements.md")

    coded = markers("include", "Codes_")
    tested = markers("tests", "Tests_")
    for requirement in ids:
        if requirement not in coded:
            problems.append(f"{requirement}: no Codes_ marker in include/")
        if requirement not in tested:
            problems.append(f"{requirement}: no Tests_ marker in tests/")
        if requirement not in doc_rows:
            continue
        number = doc_rows[requirement]
        match = ROW.match(doc_lines[number])
        summary = match.group(2).strip()
        if not summary:
            problems.append(f"{requirement}: no summary in docs/requirements.md")
        want_code, want_test = cell(coded.get(requirement, [])), cell(tested.get(requirement, []))
        if update:
            doc_lines[number] = f"| {requirement} | {summary} | {want_code} | {want_test} |"
        elif match.group(3).strip() != want_code or match.group(4).strip() != want_test:
            problems.append(f"{requirement}: docs/requirements.md names other files than the markers "
                            f"(run scripts/check_requirements.py --update)")

    if update:
        DOC.write_text("\n".join(doc_lines) + "\n", encoding="utf-8")
        problems = [p for p in problems if "names other files" not in p]

    if problems:
        print(f"check_requirements: {len(problems)} problem(s):")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    print(f"check_requirements: all {len(ids)} requirements have a Codes_ marker, a Tests_ marker and a row in "
          f"docs/requirements.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
