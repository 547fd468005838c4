"""Remake a screenshot of `keras-s2s explore` for the README (docs/images/explorer_*.png).

    python docs/explorer_screenshots.py OUT.png TEXT RUN_DIR [RUN_DIR ...] [--query Q] [--hover I]

opens the explorer on the runs in headless Chromium (Debian's `chromium`, driven by
Playwright), translates TEXT through a `/?text=...` link (plus --query), hovers output token
--hover of the first heat map, and writes the page as a 256-colour PNG (a few dozen KB).

The README's two pictures, from runs trained on 2 shared CPU cores:

    keras-s2s train --arch bahdanau --data dates --out runs/dates        # the main job
    keras-s2s train --arch transformer --data dates --out runs/dates-transformer \
        --time-budget 4 --model-arg num_layers=2 --model-arg d_model=64
    python docs/explorer_screenshots.py docs/images/explorer_dates.png \
        "Thursday, March 4th, 2021" runs/dates runs/dates-transformer \
        --query "strategy=beam&n_best=3" --hover 2

    keras-s2s train --arch transformer --data ../shared/data/kor-eng/train.tsv --out runs/ko-en \
        --vocab-size 2000 --max-source-length 24 --max-target-length 24 --batch-size 32 \
        --warmup-steps 400 --learning-rate 0.5 --epochs 200 --patience 5 --time-budget 11 \
        --model-arg num_layers=2 --model-arg d_model=128 --model-arg d_ff=512 \
        --model-arg dropout=0.1 --model-arg normalize_first=true --model-arg tie_embeddings=true
    python docs/explorer_screenshots.py docs/images/explorer_ko_en.png "이곳은 내 학교다." \
        runs/ko-en --query "strategy=beam&n_best=3" --hover 3 --width 1000
"""

import argparse
import shutil
import urllib.parse

from PIL import Image
from playwright.sync_api import sync_playwright

from keras_s2s.explore.server import Explorer, make_server


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="PNG to write")
    parser.add_argument("text", help="the sentence to translate")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--query", default="", help="more of the link, e.g. strategy=beam")
    parser.add_argument("--hover", type=int, default=0, help="output token to hover")
    parser.add_argument("--width", type=int, default=1280, help="window width in pixels")
    args = parser.parse_args()

    server = make_server(Explorer(args.run_dirs), port=0).start()
    link = server.url + "?" + "&".join(
        filter(None, [urllib.parse.urlencode({"text": args.text}), args.query]))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": args.width, "height": 600})
        page.set_default_timeout(300_000)  # the first translation traces each decoder
        page.goto(link)
        page.locator("table.heatmap").first.wait_for()
        page.locator("table.heatmap").first.locator("th.out").nth(args.hover).hover()
        page.screenshot(path=args.out, full_page=True)
        browser.close()
    server.stop()
    Image.open(args.out).convert("RGB").quantize(256).save(args.out, optimize=True)
    print(f"wrote {args.out} from {link}")


if __name__ == "__main__":
    main()
