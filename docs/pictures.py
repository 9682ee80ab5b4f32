"""The README's two pictures, from the shipped example: page 1 of the memo (Typst to PNG) and the top of the viewer
(a headless Chromium screenshot of its table's first rows). Rerun whenever docs/example is regenerated.

Usage: python docs/pictures.py [--example docs/example]
"""

import argparse
import shutil
from pathlib import Path

import typst
from playwright.sync_api import sync_playwright


def memo_page(example: Path, out: Path, ppi: int = 60) -> None:
    pages = typst.compile(str(example / "memo" / "memo.typ"), root=str(example / "memo"), format="png", ppi=ppi)
    out.write_bytes(pages[0])


def viewer_top(example: Path, out: Path) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        page.goto((example / "viewer.html").resolve().as_uri())
        box = page.locator("table").first.bounding_box()  # the first rows: generations beside training pictures
        if box is None:
            raise SystemExit(f"{example / 'viewer.html'} shows no table to picture")
        page.screenshot(path=str(out), full_page=True, clip={"x": box["x"], "y": box["y"], "width": box["width"],
                                                             "height": min(box["height"], 520)})
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--example", type=Path, default=Path("docs/example"))
    args = parser.parse_args()
    memo_page(args.example, args.example / "memo-page1.png")
    viewer_top(args.example, args.example / "viewer.png")


if __name__ == "__main__":
    main()
