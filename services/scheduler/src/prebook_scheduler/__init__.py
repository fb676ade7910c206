"""Prebook's scheduler: calls the gateway's QStash callback a lead time before each opening."""
