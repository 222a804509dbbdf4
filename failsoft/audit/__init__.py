"""Humans in the loop: fallback episodes, audit items, notifications and the actions people take."""

from failsoft.audit.queue import AuditItem, AuditQueue

__all__ = ["AuditItem", "AuditQueue"]
