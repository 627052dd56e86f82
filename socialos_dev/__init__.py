"""Development-only code, outside the production package: the sandboxes and embedded mode."""
