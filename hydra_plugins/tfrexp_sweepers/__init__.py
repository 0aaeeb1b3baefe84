"""tfrexp's Hydra plugins (Hydra looks for plugins in the hydra_plugins namespace only)."""
