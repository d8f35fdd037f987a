"""Start gptviz: `streamlit run app.py`, with the first visitor's work started in advance.

    .venv/bin/python scripts/serve.py [streamlit run options] [-- app arguments]

e.g. `scripts/serve.py --server.port 8502 -- --weights /path/to/gpt2`. Everything is passed
to `streamlit run app.py` unchanged. The one addition: while the server starts and the
first browser loads the frontend (2-3 s on 2 cores), a background thread imports torch,
pandas and plotly and builds the default model into the cache every page uses, work the
first page would otherwise do after the browser connects (`benchmarks/bench_app.py cold`
measures both ways). GPTVIZ_WARM_UP names the models to build (default `skeleton`, the
seed's; e.g. `skeleton,gpt` for a class using the real blocks; empty: imports only).

Streamlit Community Cloud runs `streamlit run app.py` itself; there the app works the
same, and the first visitor waits for the imports.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `import gptviz` works as it does for the pages

log = logging.getLogger("gptviz.warm_up")


def warm_up(models: list[str]) -> None:
    """Import what every page needs and build `models` (sidebar choices) with their defaults."""
    start = time.perf_counter()
    # Streamlit warns once that this thread runs no page script, which is the point here.
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").setLevel(logging.ERROR)
    try:
        import pandas  # noqa: F401  every page's tables
        import plotly.graph_objects  # noqa: F401

        import gptviz
        from gptviz import architecture, tokenizer, ui

        for module in pkgutil.walk_packages(gptviz.__path__, "gptviz."):  # torch and all the pages' modules
            importlib.import_module(module.name)
        tokenizer.encode(ui.DEFAULT_TEXT)  # loads the BPE ranks (~0.6 s)
        for name in [*architecture.COMPONENTS, *filter(None, architecture.COMPONENTS.values())]:
            architecture.source(name)  # the Model page's code, read once with inspect
        for choice in models:
            if choice in ui.MODEL_CHOICES and choice != "pretrained":  # a checkpoint is given in the sidebar
                ui.get_model(ui.default_spec(choice))
            else:
                log.warning("GPTVIZ_WARM_UP: %r is not a model to build (skeleton, gpt or mix); skipped", choice)
        log.info("warm-up done in %.1f s (models: %s)", time.perf_counter() - start, ", ".join(models) or "none")
    except Exception:  # a failed warm-up only loses time: the pages do the same work and report problems
        log.exception("warm-up failed; the first page will do this work instead")


def start_warm_up() -> threading.Thread:
    models = [m.strip() for m in os.environ.get("GPTVIZ_WARM_UP", "skeleton").split(",") if m.strip()]
    thread = threading.Thread(target=warm_up, args=(models,), name="gptviz-warm-up", daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from streamlit.web import cli

    start_warm_up()
    sys.argv = ["streamlit", "run", str(ROOT / "app.py"), *(sys.argv[1:] if argv is None else argv)]
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
