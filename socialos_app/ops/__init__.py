"""What an operator sees: logging, metrics, health."""
