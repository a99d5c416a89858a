"""Reports: read-only queries over events and their rollups."""
