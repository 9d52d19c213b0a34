# agentwatch server image: collector (+ alert engine) and dashboard. The same image runs either, by command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY sdk ./sdk
COPY collector ./collector
COPY dashboard ./dashboard
COPY alerts ./alerts
RUN pip install --upgrade pip && pip install '.[server]'

RUN useradd --system --uid 10001 --home /data agentwatch && mkdir -p /data && chown agentwatch /data
USER agentwatch
ENV AGENTWATCH_DATA_DIR=/data
EXPOSE 4318 8501
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:4318/healthz', timeout=2)" || exit 1
CMD ["agentwatch", "collector", "--host", "0.0.0.0"]
