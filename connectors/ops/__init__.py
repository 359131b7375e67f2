"""Operations: the liveness and readiness routes load balancers and Kubernetes probe, and the
process's Prometheus exporter.

- ``checks.py``: what "ready" means (Redis answers PING, the action server answers ``/health``,
  the model is loaded), each check bounded by a short timeout and the verdict cached briefly.
  No Sanic, no Rasa.
- ``channel.py``: the input channel ``ops`` that serves them and starts the exporter on
  ``METRICS_PORT`` (the metrics themselves are ``omnichannel/metrics.py``).
"""
