"""Everything that speaks HTTP: litestar handlers (consent's too), auth, problems, rate limits,
and the RSGI front that answers the pixel before litestar sees the request."""
