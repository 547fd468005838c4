"""MkDocs hooks: pages made from the sources at build time, so that they never drift.

- `index.md`, the getting-started page, is README.md; `serving.md` is serving/README.md
  (their links into `docs/` rewritten to the site's);
- `cli.md`, the command-line reference, is every subcommand's `--help`, from
  `keras_s2s.cli.build_parser()`.
"""

import argparse
import os
import re
from pathlib import Path

from mkdocs.structure.files import File

REPOSITORY = Path(__file__).resolve().parents[1]
#: The width `--help` is formatted to on the page.
HELP_COLUMNS = "100"


def on_files(files, config):
    pages = {
        "index.md": _site_links(REPOSITORY / "README.md"),
        "serving.md": _site_links(REPOSITORY / "serving" / "README.md"),
        "cli.md": cli_reference(),
    }
    for name, content in pages.items():
        files.append(File.generated(config, name, content=content))
    return files


def _site_links(path):
    """The Markdown of `path` (a README outside `docs/`), its links into `docs/` made the
    site's own."""
    text = path.read_text(encoding="utf-8")
    return re.sub(r"\]\(docs/", "](", text).replace("](serving/README.md)", "](serving.md)")


def _subcommands(parser):
    """`(name, parser)` of each subcommand of `parser`, in the order `--help` lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices.items())
    return []


def cli_reference():
    """The `keras-s2s` command and each subcommand's `--help`, as Markdown."""
    from keras_s2s.cli import build_parser

    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS  # argparse reads it when formatting
    try:
        parser = build_parser()
        sections = ["# Command line\n",
                    "Every subcommand of `keras-s2s`, with its `--help` (generated from "
                    "`keras_s2s.cli.build_parser()` when the site is built).\n",
                    "```text", parser.format_help().rstrip(), "```\n"]
        for name, subparser in _subcommands(parser):
            sections += [f"## keras-s2s {name}\n", "```text", subparser.format_help().rstrip(),
                         "```\n"]
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    return "\n".join(sections)
