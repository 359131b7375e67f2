# The action server (rasa-sdk): business actions, LLM fallback, channel formatting, "text me that".
# Build from the repository root:  docker build -f deploy/actions.Dockerfile -t omni-actions .
FROM python:3.10.13-slim

WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

COPY requirements.lock ./
RUN pip install --no-cache-dir pip==24.0 && pip install --no-cache-dir -r requirements.lock

COPY omnichannel/ omnichannel/
COPY actions/ actions/

RUN useradd --system --uid 10001 omni && chown -R omni /app
USER omni

EXPOSE 5055
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5055/health', timeout=2)"

CMD ["python", "-m", "rasa_sdk", "--actions", "actions", "--port", "5055"]
