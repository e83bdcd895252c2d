"""Operations: metrics, the request log, readiness and graceful drain.

Everything here is built by the composition root (`gateway.app.create_app`) and handed
to the parts that need it; nothing is global (the metrics live in a CollectorRegistry of
their own, never prometheus-client's default REGISTRY).
"""
