"""medplug ingest."""
