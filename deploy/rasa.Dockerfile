# The Rasa server with every connector (VAPI, Twilio SMS, web chat, ops probes).
# Build from the repository root:  docker build -f deploy/rasa.Dockerfile -t omni-rasa .
FROM python:3.10.13-slim

WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

COPY requirements.lock ./
RUN pip install --no-cache-dir pip==24.0 && pip install --no-cache-dir -r requirements.lock

COPY omnichannel/ omnichannel/
COPY connectors/ connectors/
COPY actions/ actions/
COPY devtools/ devtools/
COPY data/ data/
COPY config.yml domain.yml credentials.yml endpoints.yml .python-version ./
# Trains the model (named by a hash of config, domain, data and the NLU plug-ins) into models/.
RUN python -m devtools.model --quiet

RUN useradd --system --uid 10001 omni && chown -R omni /app
USER omni

# 5005: Rasa and the webhooks; 9102: Prometheus metrics (METRICS_PORT).
EXPOSE 5005 9102
# Rasa stops on SIGTERM; the orchestrator's grace period (terminationGracePeriodSeconds,
# stop_grace_period) bounds how long in-flight turns get.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5005/webhooks/ops/livez', timeout=2)"

# Secrets (RASA_AUTH_TOKEN, TWILIO_*, VAPI_*, WEBCHAT_*, REDIS_*) come from the environment.
CMD ["sh", "-c", "exec rasa run --model models --endpoints endpoints.yml --credentials credentials.yml --port 5005 --enable-api \"--auth-token=${RASA_AUTH_TOKEN}\""]
