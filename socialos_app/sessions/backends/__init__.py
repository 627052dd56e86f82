"""Session store backends; ``SESSION_STORE`` picks one by name (see ``get_store``)."""
