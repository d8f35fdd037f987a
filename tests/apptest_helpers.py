"""Running a page headlessly with streamlit's AppTest, as a shared link would open it."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120  # the first run imports torch and builds the model; AppTest's default 3 s is too short


def run_page(page: str | None = None, **query_params) -> AppTest:
    """Open `page` (e.g. "pages/1_Tokens.py"; None for Home) with these URL query parameters."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    for key, value in query_params.items():
        at.query_params[key] = value
    if page is not None:
        at.switch_page(page)
    return at.run()


def errors(at: AppTest) -> list[str]:
    """Tracebacks the page showed: there must be none, whatever the input."""
    return [e.value for e in at.exception]


def texts(at: AppTest) -> str:
    """All markdown, captions, alerts and titles on the page as one string, for asserting messages."""
    parts = []
    for kind in ("markdown", "caption", "title", "header", "subheader", "error", "warning", "info", "success"):
        parts += [str(el.value) for el in at.get(kind)]
    return "\n".join(parts)


def charts(at: AppTest) -> list:
    """The plotly figures' JSON specs, in page order."""
    import json

    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
