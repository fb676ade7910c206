"""Prebook's gateway: the REST API and the QStash callback, publishing to NATS JetStream."""
