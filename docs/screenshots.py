"""Screenshots of `mlflow ui` for docs/tracking.md, taken the way a user sees it.

Run from a folder where `snakemake --cores all` has finished (it holds mlflow.db), with
Debian's `chromium` and `pip install playwright`:

    mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000 &
    python docs/screenshots.py --out docs/img

    snakemake --report results/report.html && python docs/screenshots.py --report results/report.html

Writes mlflow_landing.png (the experiment as `mlflow ui` first shows it), mlflow_runs.png
(the runs table through the link the pipeline prints, grouped by the `method` tag) and
mlflow_parent_artifacts.png (the invocation's parent run: the summary as artifacts); with
--report, report.png (the Snakemake report's results page) instead.
"""

from __future__ import annotations

import argparse
import json
import urllib.request
from pathlib import Path


def api(host: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(f"{host}/api/2.0/mlflow/{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def click_through(page, labels, what: str, settle_ms: int = 2500) -> None:
    """Click each text label in turn; a UI that moved on still gets its screenshot."""
    try:
        for label in labels:
            page.get_by_text(label, exact=True).first.click(timeout=5000)
            page.wait_for_timeout(800)
        page.wait_for_timeout(settle_ms)
    except Exception as exc:
        print(f"{what} failed: {exc}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="http://127.0.0.1:5000")
    ap.add_argument("--experiment", default="glann/mnist5k")
    ap.add_argument("--out", default="docs/img")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--report", help="screenshot this Snakemake report instead of mlflow ui")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from playwright.sync_api import sync_playwright

    if args.report:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1500, "height": 950})
            page.goto(Path(args.report).resolve().as_uri(), wait_until="domcontentloaded")
            page.wait_for_timeout(5000)
            click_through(page, ["Summary"], "opening the Summary category")
            page.screenshot(path=str(out / "report.png"))
            browser.close()
        return

    with urllib.request.urlopen(f"{args.host}/api/2.0/mlflow/experiments/get-by-name?experiment_name="
                                f"{urllib.request.quote(args.experiment)}", timeout=30) as r:
        exp_id = json.loads(r.read())["experiment"]["experiment_id"]
    runs = api(args.host, "runs/search", {"experiment_ids": [exp_id], "max_results": 500})["runs"]
    parent = next(r for r in runs if any(t["key"] == "glann.step" and t["value"] == "pipeline"
                                         for t in r["data"].get("tags", [])))

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        # 1. what `mlflow ui` shows first for the experiment (a fresh browser profile)
        page.goto(f"{args.host}/#/experiments/{exp_id}", wait_until="domcontentloaded")
        page.wait_for_timeout(6000)
        page.screenshot(path=str(out / "mlflow_landing.png"))
        # 2. the runs table through the printed link, grouped by method
        page.goto(f"{args.host}/#/experiments/{exp_id}/runs?workflowType=machine_learning",
                  wait_until="domcontentloaded")
        page.wait_for_timeout(6000)
        try:
            page.get_by_role("button", name="Group by").click(timeout=5000)
            page.wait_for_timeout(800)
            page.get_by_text("method", exact=True).first.click(timeout=5000)
            page.keyboard.press("Escape")
            page.wait_for_timeout(2500)
        except Exception as exc:  # the table is still worth showing ungrouped
            print(f"grouping by method failed: {exc}")
        page.screenshot(path=str(out / "mlflow_runs.png"))
        # 3. the parent run's artifacts: the summary
        page.goto(f"{args.host}/#/experiments/{exp_id}/runs/{parent['info']['run_id']}/artifacts?"
                  "workflowType=machine_learning", wait_until="domcontentloaded")
        page.wait_for_timeout(5000)
        click_through(page, ["summary", "table.md"], "opening the summary artifacts")
        page.screenshot(path=str(out / "mlflow_parent_artifacts.png"))
        browser.close()
    print(f"screenshots in {out}")


if __name__ == "__main__":
    main()
