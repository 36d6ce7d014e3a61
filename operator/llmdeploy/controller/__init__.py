"""The controller: one work queue, observe -> decide -> act (docs/architecture.md)."""
