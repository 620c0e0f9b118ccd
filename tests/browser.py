"""A real headless browser (Chromium from Debian, installed by scripts/install-browser.sh) checks a report page:
every image loads, and the screenshot is not blank."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")


def _browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"no headless Chromium found (looked for {', '.join(BROWSERS)}): run scripts/install-browser.sh")


def _chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stderr[-2000:]}"
    return result


def assert_renders_in_browser(page: Path, workdir: Path, images: int) -> None:
    """Chromium loads ``page`` with ``images`` images and none broken, and its screenshot shows figures."""
    browser = _browser()
    dom = _chromium(browser, workdir / "profile", "--dump-dom", page.as_uri()).stdout
    check = re.search(r'id="image-check"[^>]*data-images="(\d+)"[^>]*data-broken="(\d+)"', dom)
    assert check, f"the page's image check did not run: {dom[-500:]}"
    assert (int(check[1]), int(check[2])) == (images, 0)

    screenshot = workdir / "report.png"
    _chromium(browser, workdir / "profile", f"--screenshot={screenshot}", "--window-size=1280,4000", page.as_uri())
    with Image.open(screenshot) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape[:2] == (4000, 1280)
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colours > 2000, f"only {colours} distinct colours: the figures did not render"
    far_from = lambda colour: np.abs(pixels.astype(int) - colour).sum(axis=2) > 30  # noqa: E731
    ink = float((far_from(pixels[5, 5]) & far_from(np.array([255, 255, 255]))).mean())
    assert ink > 0.08, f"only {ink:.1%} of the screenshot is neither page background nor white: blank figures?"
