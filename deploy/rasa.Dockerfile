# The Rasa server with every connector (VAPI, Twilio SMS, web chat, viewer, ops probes).
# Build from the repository root:  docker build -f deploy/rasa.Dockerfile -t omni-rasa:0.1.0 .
# (.dockerignore keeps the context to what is copied below: no .env, .venv or .git.)
FROM python:3.10.13-slim

WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

# Only what the server imports (devtools/image_locks.py): Rasa and TensorFlow, no test tools.
COPY deploy/rasa.requirements.lock ./
RUN pip install --no-cache-dir pip==24.0 && pip install --no-cache-dir -r rasa.requirements.lock

# The model depends on config, domain, data and the NLU plug-ins config.yml names (the
# customer-text tokenizer, spelling corrector, fallbacks and confirmation gate) only: trained
# before the rest of the code is copied, so another code change reuses this layer.
COPY config.yml domain.yml ./
COPY data/ data/
COPY omnichannel/__init__.py omnichannel/
COPY omnichannel/nlu/ omnichannel/nlu/
COPY connectors/__init__.py connectors/
COPY connectors/nlu/ connectors/nlu/
RUN python -m rasa train --config config.yml --domain domain.yml --data data --out models \
    --fixed-model-name omni

COPY omnichannel/ omnichannel/
COPY connectors/ connectors/
COPY credentials.yml endpoints.yml ./

# A numeric user, so Kubernetes' runAsNonRoot can verify it (the "restricted" Pod Security level).
RUN useradd --system --uid 10001 --gid 0 --home-dir /app omni && chown -R 10001:0 /app
USER 10001

# 5005: Rasa and the webhooks; 9102: Prometheus metrics (METRICS_PORT, METRICS_ADDRESS).
EXPOSE 5005 9102
# Rasa stops on SIGTERM; the orchestrator's grace period (terminationGracePeriodSeconds,
# stop_grace_period) bounds how long in-flight turns get.
STOPSIGNAL SIGTERM
# Loading the model takes seconds (about 40 s with TensorFlow): failures before then do not count.
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5005/webhooks/ops/livez', timeout=2)"]

# Secrets (RASA_AUTH_TOKEN, TWILIO_*, VAPI_*, WEBCHAT_*, REDIS_*) come from the environment.
# `rasa run` behind connectors/rasa_main.py: TensorFlow is not imported unless the model needs it.
CMD ["sh", "-c", "exec python -m connectors.rasa_main run --model models --endpoints endpoints.yml --credentials credentials.yml --port 5005 --enable-api \"--auth-token=${RASA_AUTH_TOKEN}\""]
