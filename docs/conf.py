# The user guide as a documentation site: Sphinx + MyST (Markdown), built strictly by
# scripts/test.sh (`python -m sphinx -W --keep-going -E -b html docs build/docs`): any warning —
# a link to a page, heading or file that does not exist, a page missing from the navigation
# (the toctree of index.md) — fails the build. The pages are plain Markdown and read the same on
# a repository browser.

project = "parsenet"
author = "parsenet contributors"
copyright = "parsenet contributors"

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["conf.py"]

# Headings h1–h4 get GitHub-style anchors ("Long runs: resume, signals, faults" →
# #long-runs-resume-signals-faults), so `page.md#anchor` links work here and on GitHub alike, and
# a link to a missing anchor is a warning.
myst_heading_anchors = 4

html_theme = "alabaster"
html_title = "parsenet"
html_theme_options = {
    "description": "ParseNet semantic segmentation with PyTorch",
    "fixed_sidebar": True,
}
