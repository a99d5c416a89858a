"""The hit path: an arrival read, taken through ordered steps (steps.py), queued, and written
by the writer (in a process of its own under `pixelgate serve`), spooled while the database is
away. No litestar here: app/http hands arrivals in."""
