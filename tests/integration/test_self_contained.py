"""A clone is the whole product: no tracked file may read a path outside the
repository (a sibling folder beside the checkout exists only on some
developers' machines). .ci/run also runs the test command in a clone placed in
an empty directory, where such a read finds nothing; this test names the line."""
import re
import subprocess

from webhook import ROOT

# Ways a file of ours could reach above the repository root.
OUTSIDE = [
    re.compile(r"\.\./shared\b"),                  # the reference folder beside the checkout
    re.compile(r"\bROOT\.parent\b"),               # Python: the folder above the root
    re.compile(r"PROJECT_SOURCE_DIR\}/\.\."),      # CMake
    re.compile(r"\$\{?ROOT\}?/\.\.(/|\"|$)"),      # shell: $ROOT/..
    re.compile(r"(?<![\w.-])/work/"),              # the developers' machine layout
]


def tracked_files():
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True,
                         check=True).stdout
    return [ROOT / p.decode() for p in out.split(b"\0") if p]


def test_no_tracked_file_reads_outside_the_repository():
    me = ROOT / "tests" / "integration" / "test_self_contained.py"
    found = []
    for path in tracked_files():
        if path == me or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue  # binary
        for n, line in enumerate(text.splitlines(), 1):
            if any(p.search(line) for p in OUTSIDE):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "paths outside the repository:\n" + "\n".join(found)


def test_the_patterns_catch_what_they_name():
    # The check above passes vacuously if a pattern is wrong: each must match
    # the kind of line it is for, and not the in-repository equivalents.
    # (Built from pieces, so that this file itself holds no such path.)
    up = ".." + "/"
    for line in ['FIXTURES = ROOT.parent / "shared"', 'seeds+=("$ROOT/' + up + 'shared/fixtures")',
                 'FIXTURES_DIR="${PROJECT_SOURCE_DIR}/../x"', 'cat /work/shared/IPAYOUT.md']:
        assert any(p.search(line) for p in OUTSIDE), line
    for line in ['FIXTURES = ROOT / "tests" / "fixtures"', 'cd "$(dirname "$0")/.."',
                 '"${PROJECT_SOURCE_DIR}/tests/fixtures"', 'ROOT="$(cd .. && pwd)"']:
        assert not any(p.search(line) for p in OUTSIDE), line
