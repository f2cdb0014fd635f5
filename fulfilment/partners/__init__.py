"""Partner adapters.  Everything partner-specific lives behind `base.Partner`."""
