"""`python -m labutils.authoring html`: one static page per solution notebook, figures embedded, and an index."""

import base64
import re
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _stored_figures(path: Path) -> int:
    nb = nbformat.read(path, as_version=4)
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_html_export_writes_one_page_per_solution_with_embedded_figures(tmp_path):
    out = tmp_path / "html"
    done = subprocess.run([sys.executable, "-m", "labutils.authoring", "html", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"wrote {len(SOLUTIONS)} page(s)" in done.stdout

    pages = sorted(p.name for p in out.glob("*.html") if p.name != "index.html")
    assert pages == [p.stem + ".html" for p in SOLUTIONS]
    index = (out / "index.html").read_text()
    assert [m for m in re.findall(r'href="([^"]+)"', index)] == pages, "the index links every page, in order"

    for sol in SOLUTIONS:
        html = (out / f"{sol.stem}.html").read_text()
        images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=\s]+)"', html)
        assert len(images) == _stored_figures(sol), f"{sol.name}: every stored figure is embedded in the page"
        for b64 in images:
            assert base64.b64decode(b64).startswith(PNG_MAGIC), f"{sol.name}: an embedded figure is not a PNG"
        assert not re.search(r'<img[^>]+src="(?!data:)', html), f"{sol.name}: no image is linked from outside the page"
        first_md = next(c.source for c in nbformat.read(sol, as_version=4).cells if c.cell_type == "markdown")
        title = first_md.lstrip("# ").splitlines()[0].strip()
        assert title.split()[-1] in html, f"{sol.name}: the page carries the notebook's text"

    assert _stored_figures(ROOT / "solutions" / "00_start_here.ipynb") >= 1, "00_start_here stores a loss curve"
