"""The pages, one module per area, each with its tool settings beside its handlers."""
