"""The documentation says what the code does: docs/configuration.md has one
row per setting of the settings table (handler/settings.cpp) with its default
and reload flag, the README stays an entry point, links between the documents
resolve, and nothing cites notes that are not in the repository. No stack
needed."""
import os
import re
import subprocess
from pathlib import Path

import pytest

from webhook import BIN, ROOT

SETTINGS_CPP = ROOT / "handler" / "settings.cpp"
SETTINGS_H = ROOT / "handler" / "settings.h"
CONFIGURATION_MD = ROOT / "docs" / "configuration.md"
README_MAX_LINES = 300


def c_items(text, start):
    """Splits the brace list that opens at text[start] into its top-level items:
    the text between commas, with string literals kept whole (their commas and
    braces are not structure). Returns (items, index after the closing brace)."""
    assert text[start] == "{", text[start:start + 40]
    items, depth, i, cur = [], 0, start, ""
    while True:
        ch = text[i]
        if ch == '"':
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            cur += text[i:j + 1]
            i = j + 1
            continue
        if text.startswith("//", i):
            i = text.index("\n", i)
            continue
        if ch == "{":
            depth += 1
            if depth == 1:
                i += 1
                continue
        elif ch == "}":
            depth -= 1
            if depth == 0:
                if cur.strip():
                    items.append(cur.strip())
                return items, i + 1
        elif ch == "," and depth == 1:
            items.append(cur.strip())
            cur = ""
            i += 1
            continue
        cur += ch
        i += 1


def c_string(expr):
    """The value of one or more adjacent C string literals ("a" "b" -> "ab")."""
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"', expr)
    assert parts, f"not a string literal: {expr}"
    return "".join(parts).encode().decode("unicode_escape")


def settingdef_members():
    """SettingDef's members in declaration order: the order of its initialisers."""
    h = SETTINGS_H.read_text()
    body = re.search(r"struct SettingDef \{(.*?)\n\};", h, re.S).group(1)
    members = []
    for decl in re.sub(r"//[^\n]*", "", body).split(";"):
        decl = decl.strip()
        if not decl:
            continue
        # "long long min, max" declares two; the last word of each part is a name.
        for part in decl.split(","):
            members.append(re.findall(r"[A-Za-z_]\w*", part)[-1])
    return members


def settings_table():
    """{name: (default, reloadable)} from kSettingDefs in handler/settings.cpp."""
    members = settingdef_members()
    for needed in ("name", "default_value", "reloadable"):
        assert needed in members, f"SettingDef has no member {needed}: {members}"
    src = SETTINGS_CPP.read_text()
    m = re.search(r"kSettingDefs\s*=\s*\{", src)
    assert m, "kSettingDefs not found in handler/settings.cpp"
    rows, _ = c_items(src, m.end() - 1)
    table = {}
    for row in rows:
        start = row.index("{")
        fields, _ = c_items(row, start)
        assert len(fields) == len(members), f"{len(fields)} initialisers for {members}: {row}"
        f = dict(zip(members, fields))
        assert f["reloadable"] in ("true", "false"), row
        table[c_string(f["name"])] = (c_string(f["default_value"]), f["reloadable"] == "true")
    assert len(table) >= 10, table  # the parser found the table, not a fragment
    return table


def documented_settings():
    """{name: (default, reloads)} from the table in docs/configuration.md."""
    rows = {}
    for line in CONFIGURATION_MD.read_text().splitlines():
        m = re.match(r"\| `([a-z_]+)` \| `([^`]*)` \| (yes|no) \|", line)
        if m:
            name, default, reloads = m.groups()
            assert name not in rows, f"{name} is documented twice"
            rows[name] = ("" if default == '""' else default, reloads == "yes")
    return rows


def test_settings_table_parser_reads_known_rows():
    # The parser is the test's own code: check it on values that are known.
    table = settings_table()
    assert table["workers"] == ("1", False)
    assert table["log_level"] == ("info", True)
    assert table["dedup_pointers"] == ("/eventId,/id,/data/id+/event", True)


def test_configuration_md_lists_every_setting_with_default_and_reload_flag():
    code, docs = settings_table(), documented_settings()
    assert sorted(code) == sorted(docs), (
        f"missing from docs/configuration.md: {sorted(set(code) - set(docs))}; "
        f"documented but not a setting: {sorted(set(docs) - set(code))}")
    wrong = {n: {"code": code[n], "docs": docs[n]} for n in code if code[n] != docs[n]}
    assert not wrong, f"(default, reloadable) differ: {wrong}"


def test_configuration_md_defaults_match_show_config():
    """The daemon's own output, without a config file or IPAYOUT_* variables."""
    if not BIN.exists():
        pytest.fail(f"{BIN} is not built (scripts/test builds it first)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPAYOUT_")}
    p = subprocess.run([str(BIN), "show-config"], capture_output=True, text=True, env=env,
                       timeout=30, cwd="/")
    assert p.returncode == 0, p.stderr
    shown = dict(re.match(r"(\w+) = ?(.*)", line).groups()
                 for line in p.stdout.splitlines() if not line.startswith("#"))
    docs = documented_settings()
    assert sorted(shown) == sorted(docs)
    wrong = {n: (shown[n], docs[n][0]) for n in shown if shown[n] != docs[n][0]}
    assert not wrong, f"show-config vs docs/configuration.md: {wrong}"


def test_readme_is_an_entry_point():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def tracked_docs():
    """The repository's Markdown files: git's list (plus docs/ not yet added),
    or, outside a git checkout, every .md that is not build output."""
    p = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True)
    if p.returncode == 0 and p.stdout.strip():
        files = {ROOT / f for f in p.stdout.split()}
    else:
        files = {f for f in ROOT.rglob("*.md")
                 if not any(part.startswith((".", "build")) or part == "node_modules"
                            for part in f.relative_to(ROOT).parts)}
    return sorted(files | set((ROOT / "docs").glob("*.md")))


def test_nothing_cites_the_design_notes_that_are_not_in_the_repository():
    """The design and the i-payout facts live in docs/design.md and
    docs/ipayout.md; a comment or document naming the old notes (upper case,
    kept outside the repository) points at nothing. Paths outside the
    repository in general: test_self_contained.py."""
    old_names = [n.upper() + ".md" for n in ("design", "ipayout")]
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    # This file and test_self_contained.py name them as what must not appear.
    skip = {Path(__file__).resolve(), Path(__file__).resolve().parent / "test_self_contained.py"}
    bad = []
    for name in files:
        path = ROOT / name
        if not name or path in skip or not path.is_file():
            continue
        try:
            lines = path.read_text().splitlines()
        except UnicodeDecodeError:
            continue
        bad += [f"{name}:{n}" for n, line in enumerate(lines, 1)
                if any(old in line for old in old_names)]
    assert not bad, bad


def test_relative_links_resolve():
    """Every [text](path#anchor) between the docs names a file that exists and,
    for Markdown files, a heading that exists (GitHub's anchor rule)."""
    def anchors(path):
        out = set()
        for line in path.read_text().splitlines():
            if line.startswith("#"):
                title = line.lstrip("#").strip().lower()
                title = re.sub(r"[^\w\- ]", "", title)
                out.add(title.replace(" ", "-"))
        return out

    broken = []
    for doc in tracked_docs():
        text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            if not dest.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, broken


def test_operations_md_quotes_the_readme_exposure_score():
    """test_package.py checks the README's copy against systemd-analyze; this
    keeps every copy in docs/operations.md (the offline and the live score
    scripts/system-test prints) the same."""
    pattern = r"Overall exposure level for ipayout-webhookd\.service: \d+\.\d+"
    readme = re.findall(pattern, (ROOT / "README.md").read_text())
    operations = re.findall(pattern, (ROOT / "docs" / "operations.md").read_text())
    assert len(readme) == 1 and operations and set(operations) == set(readme), (readme, operations)
