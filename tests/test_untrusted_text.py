"""Text that comes from users (a file or folder name, a tag, a label) is shown as text in the
report and in the Data Docs: in headless Chromium no script of it runs and no dialog opens."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from chorus.errors import ValidationFailedError
from chorus.evaluation.report import render_report
from chorus.metrics.classification import classification_metrics
from chorus.validation import Validator
from test_validation import _set, good_tables

SCRIPT = "<script>alert(1)</script>"
ATTRIBUTE = '"><img src=x onerror=alert(2)>'


def _open_in_chromium(pages: list[Path]) -> tuple[list[str], list[str]]:
    """Dialogs opened, and each page's visible text."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: `make test` installs it (infra/local/install-system-packages.sh --test)"
    dialogs: list[str] = []
    texts = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        for page_file in pages:
            page.goto(page_file.as_uri())
            page.wait_for_load_state("load")
            page.wait_for_timeout(300)  # an injected onerror handler fires after load
            texts.append(page.inner_text("body"))
        browser.close()
    return dialogs, texts


def test_report_shows_labels_names_and_notes_as_text(tmp_path):
    labels = [SCRIPT, ATTRIBUTE]
    metrics = classification_metrics([SCRIPT, ATTRIBUTE, SCRIPT], [SCRIPT, SCRIPT, SCRIPT], labels)
    report = tmp_path / "report.html"
    report.write_text(render_report(
        f"chorus-style {SCRIPT}", {"model": SCRIPT, "tracks": ATTRIBUTE}, metrics, [], notes=[SCRIPT, ATTRIBUTE],
        candidates=[{"candidate": SCRIPT, "registered": ATTRIBUTE, "task": "style", "metric": "accuracy",
                     "value": {"mean": 0.5, "ci": [0.1, 0.9]}, "baseline_name": SCRIPT, "baseline": 0.3}],
        figures=[(ATTRIBUTE, "data:,")]))
    dialogs, [text] = _open_in_chromium([report])
    assert dialogs == []
    assert SCRIPT in text and "onerror=alert(2)" in text


def test_data_docs_show_an_offending_value_as_text(tmp_path):
    validator = Validator(tmp_path / "docs")
    with pytest.raises(ValidationFailedError) as failed:
        validator.validate(_set("split", 1, SCRIPT + ATTRIBUTE)(good_tables()["tracks"]), "tracks")
    assert SCRIPT in str(failed.value)  # the failure names the value
    pages = sorted((tmp_path / "docs" / "validations").rglob("*.html"))
    assert pages
    dialogs, texts = _open_in_chromium([tmp_path / "docs" / "index.html", *pages])
    assert dialogs == []
    assert any(SCRIPT in text for text in texts)  # shown, as text
