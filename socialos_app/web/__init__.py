"""The CherryPy application: assembly, tools, request and error pages, rendering, pages."""
