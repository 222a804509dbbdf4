"""``failsoft demo``: small models, a real backend process, the gateway, traffic and scheduled faults."""
