# One gptviz replica. Run several behind deploy/nginx.conf for a large class
# (scripts/replicas.py shows the setup: replicas on their own ports, nginx in front).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
# The CPU build of torch: PyPI's default Linux wheel pulls several GB of CUDA libraries.
# requirements.txt pins torch==2.13.0, which this 2.13.0+cpu satisfies, so it stays.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY requirements.txt .
RUN pip install -r requirements.txt
RUN useradd --create-home gptviz
# Owned by the app's user in the same layer (a separate chown -R would copy every file again).
# .streamlit/config.toml comes along: maxUploadSize, the toolbar, no usage statistics.
COPY --chown=gptviz:gptviz . .
USER gptviz
EXPOSE 8501
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=2)"
CMD ["streamlit", "run", "app.py", "--server.port=8501", "--server.address=0.0.0.0", "--server.headless=true", "--server.fileWatcherType=none"]
