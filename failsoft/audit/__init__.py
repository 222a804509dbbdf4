"""Humans in the loop: the watch that opens audit items, the actions people take, the webhooks."""

from failsoft.store.audits import AuditAction, AuditItem, AuditQueue, Episode

__all__ = ["AuditAction", "AuditItem", "AuditQueue", "Episode"]
