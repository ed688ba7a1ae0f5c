"""README.md and docs/*.md: every relative link resolves, and the README's commands parse.

Links are checked as GitHub renders them: a path relative to the page's folder, and an
`#anchor` that is one of the target page's heading slugs. Commands are checked statically
(as tests/test_notebook.py checks the notebook's): each `python -m advseg_jax.X` names a real
module, each --flag is one it defines, each --config.KEY exists in the config named.
"""

import glob
import os
import re
import shlex

import pytest

from advseg_jax import configs
import test_notebook

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
PAGES = [README, *sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))]
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: str) -> set:
    """Every heading's slug, with GitHub's -1, -2 ... suffixes for repeated headings."""
    with open(path) as f:
        text = _FENCE.sub("", f.read())
    found, counts = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M):
        base = slug(heading)
        count = counts.get(base, 0)
        found.add(base if count == 0 else f"{base}-{count}")
        counts[base] = count + 1
    return found


def relative_links(path: str) -> list:
    with open(path) as f:
        text = _FENCE.sub("", f.read())
    text = re.sub(r"`[^`\n]*`", "", text)  # Inline code is not a link.
    return [target for target in _LINK.findall(text)
            if not re.match(r"[a-z][a-z0-9+.-]*:", target)]  # http:, mailto:, ...


def test_slug_matches_github_s_rule():
    assert slug("Stanford Background on real data (Sec. 4.1, Fig. 4)") == (
        "stanford-background-on-real-data-sec-41-fig-4")
    assert slug("Memory: gradient accumulation sized by the device") == (
        "memory-gradient-accumulation-sized-by-the-device")
    assert slug("Embedded dataset: `digit_scenes`") == "embedded-dataset-digit_scenes"


def test_there_are_docs_pages_and_a_short_readme():
    assert len(PAGES) > 5
    with open(README) as f:
        assert len(f.read().splitlines()) <= 400


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, REPO))
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page):
        file, _, anchor = target.partition("#")
        path = os.path.normpath(os.path.join(os.path.dirname(page), file)) if file else page
        if not os.path.exists(path):
            broken.append(f"{target}: no file {os.path.relpath(path, REPO)}")
        elif anchor and (not path.endswith(".md") or anchor not in anchors(path)):
            broken.append(f"{target}: no heading #{anchor} in {os.path.relpath(path, REPO)}")
    assert not broken, f"{os.path.relpath(page, REPO)}: " + "; ".join(broken)


def readme_commands() -> list:
    """(module, argv) of each `python -m advseg_jax.X ...` in the README's shell blocks."""
    with open(README) as f:
        blocks = re.findall(r"^```(?:bash|sh)\n(.*?)^```", f.read(), re.M | re.S)
    found = []
    for block in blocks:
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            if line.lstrip().startswith("#"):
                continue
            for part in re.split(r"&&|;|\|", line):
                argv = shlex.split(part, comments=True)
                if len(argv) > 2 and argv[:2] == ["python", "-m"] and argv[2].startswith(
                        "advseg_jax."):
                    found.append((argv[2], argv[3:]))
    return found


def test_readme_commands_use_only_flags_the_clis_define():
    commands = readme_commands()
    assert {module for module, _ in commands} >= {"advseg_jax.main", "advseg_jax.evaluate",
                                                  "advseg_jax.predict"}
    for module, argv in commands:
        path = os.path.join(REPO, *module.split(".")) + ".py"
        assert os.path.isfile(path), module
        allowed = test_notebook.defined_flags(path) | test_notebook.ABSL_FLAGS
        config = None
        for arg in argv:
            assert arg.startswith("--"), (module, arg)
            name, _, value = arg[2:].partition("=")
            if name == "config":
                config = test_notebook.load_config(os.path.join(REPO, configs.resolve(value)))
        for arg in argv:
            name = arg[2:].partition("=")[0]
            if name.startswith("config."):
                assert config is not None, (module, arg, "an override needs --config")
                assert test_notebook.has_key(config, name[len("config."):]), (module, arg)
            else:
                assert name in allowed, (module, arg, sorted(allowed))
