"""TFRecord storage: the Example format (schema), versions keyed by fingerprint (manifest), writing (writer)."""
