"""Headless Chromium (Debian's ``chromium``) for tests that look at pages like a person.

The ``chromium`` fixture lives in conftest.py: it skips when the browser is missing,
unless ``SDGEN_REQUIRE_CHROMIUM=1`` (set by scripts/test.sh), where that is a failure.
"""

from __future__ import annotations

import html
import re
import subprocess
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")

CHECK_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>check</title></head>
<body><pre id="result">PENDING</pre>
<iframe id="sheet" src="{src}" width="1200" height="900"></iframe>
<script>
document.getElementById("sheet").addEventListener("load", function () {{
  var result = document.getElementById("result");
  try {{
    var images = Array.from(this.contentDocument.images);
    var loaded = images.filter(function (img) {{
      return img.complete && img.naturalWidth > 0;
    }});
    result.textContent = "LOADED " + loaded.length + "/" + images.length;
  }} catch (error) {{
    result.textContent = "ERROR " + error;
  }}
}});
</script></body></html>
"""


def run_chromium(chromium: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        str(chromium),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--allow-file-access-from-files",
        "--force-color-profile=srgb",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def images_loaded(chromium: Path, page: Path, scratch: Path) -> str:
    """``"LOADED k/n"``: how many of the ``n`` images of ``page`` decoded in Chromium.

    A check page (test scaffolding, not part of the product) loads ``page`` in an iframe
    and counts the images that finished with a non-zero natural width.
    """
    check = scratch / "check.html"
    check.write_text(CHECK_PAGE.format(src=html.escape(page.as_uri())), "utf-8")
    result = run_chromium(chromium, scratch / "profile-dom", "--dump-dom", check.as_uri())
    match = re.search(r'<pre id="result">([^<]*)</pre>', result.stdout)
    assert match, f"no result in the dumped DOM\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return match.group(1)
