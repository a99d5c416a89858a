"""The ground floor: settings, the database engine and sessions, table definitions, keys
(pseudonyms and sealed tokens), metrics and the site directory. It imports nothing above it."""
