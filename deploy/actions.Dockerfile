# The action server (rasa-sdk): business actions, LLM fallback, channel formatting, "text me that".
# Build from the repository root:  docker build -f deploy/actions.Dockerfile -t omni-actions:0.1.0 .
FROM python:3.10.13-slim

WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

# Only what the actions import (devtools/image_locks.py): rasa-sdk and the core's clients, not
# Rasa or TensorFlow.
COPY deploy/actions.requirements.lock ./
RUN pip install --no-cache-dir pip==24.0 && pip install --no-cache-dir -r actions.requirements.lock

COPY omnichannel/ omnichannel/
COPY actions/ actions/

# A numeric user, so Kubernetes' runAsNonRoot can verify it (the "restricted" Pod Security level).
RUN useradd --system --uid 10001 --gid 0 --home-dir /app omni && chown -R 10001:0 /app
USER 10001

EXPOSE 5055
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5055/health', timeout=2)"]

CMD ["python", "-m", "rasa_sdk", "--actions", "actions", "--port", "5055"]
